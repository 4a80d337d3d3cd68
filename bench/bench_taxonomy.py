"""Offline taxonomy resolution: backbone index build and name resolution throughput and memory.

Generates a GBIF-layout backbone dump (Taxon.tsv + VernacularName.tsv) of 1M taxa (kingdoms to
species, 15% of species synonyms) and 100k query name tuples (40% exact accepted species, 20%
synonyms, 25% one-letter typos, 15% unknown names), then measures, each in its own process:

- index build: streaming the dump into the SQLite index (seconds, peak RSS);
- resolution: the stage's engine (backbone resolver + profiles + on-disk cache) over all query
  tuples, names/s and peak RSS; and the resolver alone (lookups only), names/s, with gnparser
  (the default; one call into its library per name dominates) and with the builtin parser;
- baselines, in the same run: loading the whole Taxon.tsv into RAM with pandas and a dict by
  canonical name (what a lookup without an index needs), and brute-force fuzzy matching (edit
  distance against every stem) on a small sample.

    python bench/bench_taxonomy.py [--small]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.sampling import TreeSampler  # noqa: E402

SYLLABLES = (
    "ba", "ca", "da", "fe", "ge", "hi", "ko", "lu", "ma", "ne", "po", "ra", "si", "ta", "vu",
    "xe", "zo", "ri", "mo", "la", "pe", "qu", "ti", "no", "be", "di", "fo", "gu", "ke", "li",
    "mu", "na", "pi", "ro", "se", "tu"
)  # fmt: skip
GENUS_ENDINGS = ("us", "a", "ia", "ella", "opsis", "on", "ites")
EPITHET_ENDINGS = ("us", "a", "um", "is", "ensis", "ii", "ata", "oides")
HIGHER = (("kingdom", 2), ("phylum", 20), ("class", 120), ("order", 600), ("family", 3000))
SPECIES_PER_GENUS = 40
SYNONYM_SHARE = 0.15


# ---------------------------------------------------------------------------------------------
# Data generation


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))


def generate(folder: Path, taxa: int, queries: int, seed: int = 7) -> Path:
    """Write the dump into folder/dump and the query tuples into folder/queries.jsonl."""
    rng = random.Random(seed)
    dump = folder / "dump"
    dump.mkdir(parents=True)
    header = ("taxonID\tdatasetID\tparentNameUsageID\tacceptedNameUsageID\toriginalNameUsageID\t"
              "scientificName\tscientificNameAuthorship\tcanonicalName\tgenericName\t"
              "specificEpithet\tinfraspecificEpithet\ttaxonRank\tnameAccordingTo\t"
              "namePublishedIn\ttaxonomicStatus\tnomenclaturalStatus\ttaxonRemarks\tkingdom\t"
              "phylum\tclass\torder\tfamily\tgenus\n")  # fmt: skip
    next_id = 1
    used: set[str] = set()
    accepted: list[tuple[int, str, list[str]]] = []  # (id, canonical, lineage)
    synonyms: list[tuple[str, list[str]]] = []
    rows_written = 0

    def unique(make) -> str:
        while True:
            name = make()
            if name not in used:
                used.add(name)
                return name

    with open(dump / "Taxon.tsv", "w") as out:
        out.write(header)

        def write(tid, parent, acc, canonical, author, rank, status, lineage, generic="", epithet=""):
            nonlocal rows_written
            sci = f"{canonical} {author}".strip()
            values = [str(tid), "", str(parent or ""), str(acc or ""), "", sci, author, canonical,
                      generic, epithet, "", rank, "", "", status, "", "", *lineage]  # fmt: skip
            out.write("\t".join(values) + "\n")
            rows_written += 1

        parents: list[tuple[int, list[str]]] = [(0, [""] * 6)]
        for depth, (rank, count) in enumerate(HIGHER):
            level = []
            for i in range(count):
                parent_id, parent_lineage = parents[i % len(parents)]
                if rank == "kingdom":
                    name = unique(lambda i=i: ("Animalia", "Plantae")[i])
                else:
                    ending = "idae" if rank == "family" else "a"
                    name = unique(lambda e=ending: _word(rng, 3).capitalize() + e)
                lineage = list(parent_lineage)
                lineage[depth] = name
                write(next_id, parent_id or None, None, name, "", rank, "accepted", lineage)
                level.append((next_id, lineage))
                next_id += 1
            parents = level
        genera = max(1, (taxa - rows_written) // (SPECIES_PER_GENUS + 1))
        for g in range(genera):
            family_id, family_lineage = parents[g % len(parents)]
            genus = unique(lambda: _word(rng, rng.choice((2, 3))).capitalize() + rng.choice(GENUS_ENDINGS))
            lineage = [*family_lineage[:5], genus]
            genus_id = next_id
            write(genus_id, family_id, None, genus, "L.", "genus", "accepted", lineage, genus)
            next_id += 1
            for _ in range(SPECIES_PER_GENUS):
                if rows_written >= taxa:
                    break
                epithet = _word(rng, rng.choice((2, 3))) + rng.choice(EPITHET_ENDINGS)
                canonical = f"{genus} {epithet}"
                if canonical in used:
                    continue
                used.add(canonical)
                year = 1750 + rng.randrange(270)
                if accepted and rng.random() < SYNONYM_SHARE:
                    target_id, _, target_lineage = accepted[rng.randrange(len(accepted))]
                    write(next_id, target_id, target_id, canonical, f"(Auct., {year})", "species",
                          "synonym", target_lineage, genus, epithet)  # fmt: skip
                    synonyms.append((canonical, target_lineage))
                else:
                    write(next_id, genus_id, None, canonical, f"Auct., {year}", "species",
                          "accepted", lineage, genus, epithet)  # fmt: skip
                    accepted.append((next_id, canonical, lineage))
                next_id += 1
    with open(dump / "VernacularName.tsv", "w") as out:
        out.write("taxonID\tvernacularName\tlanguage\tcountry\tcountryCode\tsex\tlifeStage\tsource\n")
        for tid, canonical, _ in rng.sample(accepted, min(len(accepted), taxa // 10)):
            for language in rng.sample(("en", "de", "fr"), rng.randint(1, 2)):
                out.write(f"{tid}\t{canonical.split()[1]} {language}\t{language}\t\t\t\t\tbench\n")
    _write_queries(folder / "queries.jsonl", rng, queries, accepted, synonyms, used)
    return dump


def _typo(rng: random.Random, canonical: str) -> str:
    genus, epithet = canonical.split(" ")
    position = rng.randrange(1, max(2, len(epithet) - 3))
    letter = rng.choice("bcdfgklmnprst".replace(epithet[position], ""))
    return f"{genus} {epithet[:position]}{letter}{epithet[position + 1:]}"


def _write_queries(path: Path, rng: random.Random, count: int, accepted, synonyms, used) -> None:
    with open(path, "w") as out:
        for i in range(count):
            roll = i % 20
            if roll < 8:
                _, name, lineage = accepted[rng.randrange(len(accepted))]
            elif roll < 12:
                name, lineage = synonyms[rng.randrange(len(synonyms))]
            elif roll < 17:
                _, right, lineage = accepted[rng.randrange(len(accepted))]
                name = _typo(rng, right)
            else:
                name = f"{_word(rng, 4).capitalize()}x {_word(rng, 3)}um"
                while name in used:
                    name += "x"
                lineage = ["Animalia", "", "", "", "", name.split()[0]]
            out.write(json.dumps({"kingdom": lineage[0], "genus": name.split()[0], "species": name}) + "\n")


# ---------------------------------------------------------------------------------------------
# Phases (each runs in its own process, so its peak RSS is its own)


def phase_build(folder: Path) -> dict:
    from stages.taxonomy.index import ensure_index

    start = time.perf_counter()
    path = ensure_index(folder / "dump", folder / "index")
    return {"seconds": time.perf_counter() - start, "index_bytes": path.stat().st_size}


def _tuples(folder: Path):
    from stages.taxonomy.names import INPUT_FIELDS, invalid_token_set, make_tuple

    invalid = invalid_token_set(["unknown", "null", "none", "", "n/a"])
    with open(folder / "queries.jsonl") as handle:
        for line in handle:
            row = json.loads(line)
            yield make_tuple([row.get(f) for f in INPUT_FIELDS], invalid)


def phase_resolve(folder: Path) -> dict:
    from stages.taxonomy.backbone import BackboneIndex, BackboneResolver, MatchOptions
    from stages.taxonomy.cache import AnswerCache
    from stages.taxonomy.engine import Engine, Settings
    from stages.taxonomy.index import ensure_index
    from stages.taxonomy.profiles import RULES, Profiles
    from stages.taxonomy.vernacular import CommonNames

    index = ensure_index(folder / "dump", folder / "index")
    tuples = list(_tuples(folder))
    resolver = BackboneResolver(index, 11, "gnparser", True, MatchOptions(), 10_000)
    settings = Settings(("species", "scientific_name", "genus", "family", "order", "class",
                         "phylum", "kingdom"), "gnparser", True, {"Metazoa": "Animalia"}, 1,
                        progress=False)  # fmt: skip
    common = CommonNames(BackboneIndex(index), 11, ["en"], False, "family")
    engine = Engine(resolver, AnswerCache(folder / "cache.sqlite"), Profiles(list(RULES)),
                    settings, common, {})  # fmt: skip
    start = time.perf_counter()
    resolved = engine.resolve_pending(tuples)  # what the stage's plan() does
    seconds = time.perf_counter() - start
    statuses: dict[str, int] = {}
    keys = sorted({t.key for t in tuples})
    for start in range(0, len(keys), 5_000):  # a chunk at a time: the RSS is the engine's
        for d in engine.cache.get_decisions(engine.params_digest, keys[start : start + 5_000]).values():
            key = f"{d['resolution_status']}:{d['match_type']}@{d['query_rank']}"
            statuses[key] = statuses.get(key, 0) + 1
    return {"seconds": seconds, "names": len(tuples), "unique": resolved, "by_outcome": statuses}


def phase_lookup(folder: Path, parser: str = "gnparser") -> dict:
    """The resolver alone: one answer per species term (no profiles, no cache)."""
    from stages.taxonomy.backbone import BackboneResolver, MatchOptions
    from stages.taxonomy.index import ensure_index

    resolver = BackboneResolver(ensure_index(folder / "dump", folder / "index"), 11, parser,
                                True, MatchOptions(), 10_000)  # fmt: skip
    terms = [t.get("species") for t in _tuples(folder)]
    start = time.perf_counter()
    for term in terms:
        resolver.answer(term, 11)
    return {"seconds": time.perf_counter() - start, "names": len(terms)}


def phase_baseline(folder: Path) -> dict:
    """Whole Taxon.tsv in RAM (pandas) + a dict by canonical name; exact lookups on it; and
    brute-force fuzzy matching (edit distance to every stem) for a small sample."""
    import pandas as pd

    from stages.taxonomy.backbone import within_one_edit
    from stages.taxonomy.names import stem_canonical

    start = time.perf_counter()
    frame = pd.read_csv(folder / "dump" / "Taxon.tsv", sep="\t", dtype=str, quoting=3,
                        keep_default_na=False)  # fmt: skip
    by_name: dict[str, list[int]] = {}
    for position, name in enumerate(frame["canonicalName"].tolist()):
        by_name.setdefault(name, []).append(position)
    load_seconds = time.perf_counter() - start
    terms = [t.get("species") for t in _tuples(folder)]
    start = time.perf_counter()
    hits = sum(1 for term in terms if term in by_name)
    lookup_seconds = time.perf_counter() - start
    stems = [stem_canonical(n) for n in by_name]
    sample = [t for t in terms if t not in by_name][:20]
    start = time.perf_counter()
    for term in sample:
        stem = stem_canonical(term)
        [s for s in stems if within_one_edit(stem, s)]
    fuzzy_seconds = time.perf_counter() - start
    return {"load_seconds": load_seconds, "exact_per_s": len(terms) / max(lookup_seconds, 1e-9),
            "exact_hits": hits, "fuzzy_per_s": len(sample) / fuzzy_seconds}  # fmt: skip


PHASES = {"build": phase_build, "resolve": phase_resolve, "lookup": phase_lookup,
          "lookup-builtin": lambda folder: phase_lookup(folder, "builtin"),
          "baseline": phase_baseline}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Measurement


def run_phase(name: str, folder: Path) -> tuple[dict, int]:
    cmd = [sys.executable, __file__, "--phase", name, "--folder", str(folder)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid, interval=0.05, descendants=False)
    out, err = proc.communicate()
    peak = sampler.finish()
    if proc.returncode:
        sys.exit(f"phase {name} failed:\n{err.decode()}")
    return json.loads(out.decode().strip().splitlines()[-1]), peak


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100k taxa and 10k names instead")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.folder)))
        return
    taxa, queries = (100_000, 10_000) if args.small else (1_000_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        dump = generate(folder, taxa, queries)
        size = sum(p.stat().st_size for p in dump.iterdir())
        print(f"generated {taxa:,} taxa ({mib(size)} dump) and {queries:,} query tuples "
              f"in {time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
        build, build_rss = run_phase("build", folder)
        print(f"index build:       {build['seconds']:8.1f} s, {taxa / build['seconds']:>9,.0f} taxa/s, "
              f"peak RSS {mib(build_rss)}, index {mib(build['index_bytes'])}", flush=True)  # fmt: skip
        resolve, resolve_rss = run_phase("resolve", folder)
        rate = resolve["names"] / resolve["seconds"]
        print(f"engine resolve:    {resolve['seconds']:8.1f} s, {rate:>9,.0f} names/s, "
              f"peak RSS {mib(resolve_rss)} ({resolve['unique']:,} unique tuples)", flush=True)  # fmt: skip
        print(f"  outcomes: {json.dumps(dict(sorted(resolve['by_outcome'].items())))}")
        lookup, lookup_rss = run_phase("lookup", folder)
        lookup_rate = lookup["names"] / lookup["seconds"]
        print(f"resolver lookups:  {lookup['seconds']:8.1f} s, {lookup_rate:>9,.0f} names/s, "
              f"peak RSS {mib(lookup_rss)}", flush=True)  # fmt: skip
        builtin, _ = run_phase("lookup-builtin", folder)
        builtin_rate = builtin["names"] / builtin["seconds"]
        print(f"  with name_parser = builtin: {builtin_rate:,.0f} names/s "
              f"({builtin_rate / lookup_rate:.1f}x the gnparser rate)", flush=True)  # fmt: skip
        base, base_rss = run_phase("baseline", folder)
        print(f"baseline in RAM:   load {base['load_seconds']:.1f} s, peak RSS {mib(base_rss)}, "
              f"exact dict lookups {base['exact_per_s']:,.0f}/s, brute-force fuzzy "
              f"{base['fuzzy_per_s']:,.1f} names/s", flush=True)  # fmt: skip
        print(f"ratios: resolver RSS / in-RAM RSS = {lookup_rss / base_rss:.2f}x; "
              f"engine names/s / brute-force fuzzy names/s = {rate / base['fuzzy_per_s']:,.0f}x")


if __name__ == "__main__":
    main()
