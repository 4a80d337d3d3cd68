"""One partition of stage 04: which filters look at which rows, the scores of the configured
models on the partition's stored images (decoded ahead by a loader thread), then the decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.joined import iter_images, joined_rows
from pipeline.stage import Partition, PartitionOutput, StageContext
from stages.filter import schema as S
from stages.filter.decide import decide
from stages.filter.loader import decoded_batches
from stages.filter.models import Models, load_models
from stages.filter.occurrence_plan import ROW_COLUMNS, occurrence_keys, read_decisions
from stages.filter.settings import limit_torch_threads, resolve_device, scopes

IMAGE_FILTERS = ("face", "camera_trap", "museum")  # the filters that look at pixels


def _states(
    rows: pa.Table, params: dict[str, Any], configured: dict[str, bool],
    occurrence: dict[str, dict[str, Any]], keys: list[str | None],
) -> dict[str, list[str]]:  # fmt: skip
    """Per filter, per row: applied / not_applicable / not_run."""
    scope = scopes(params)
    image_types, providers = rows["image_type"].to_pylist(), rows["provider"].to_pylist()
    states: dict[str, list[str]] = {}
    for name in S.FILTERS:
        on = S.APPLIED if configured[name] else S.NOT_RUN
        out = []
        for i, uuid in enumerate(rows["uuid"].to_pylist()):
            if name == "occurrence":
                covered = keys[i] is not None
            else:
                covered = scope[name].covers(image_types[i], providers[i])
            if name == "camera_trap" and uuid in occurrence and occurrence[uuid]["occurrence_camera_trap"]:
                covered = True  # near-identical frames of one occurrence: treated as a camera trap
            out.append(on if covered else S.NOT_APPLICABLE)
        states[name] = out
    return states


Scores = dict[str, dict[str, Any]]


def _score(part_index: int, ctx: StageContext, uuids: list[str], states: dict[str, list[str]],
           areas: list[str | None], models: Models) -> tuple[Scores, dict[str, str]]:  # fmt: skip
    """Scores by uuid for the rows some image filter applies to, and decode errors by uuid."""
    want = {f: {u for u, s in zip(uuids, states[f], strict=True) if s == S.APPLIED} for f in IMAGE_FILTERS}
    needed = set().union(*want.values())
    area_of = dict(zip(uuids, areas, strict=True))
    scores: dict[str, dict[str, Any]] = {u: {} for u in needed}
    errors: dict[str, str] = {}
    if not needed:
        return scores, errors
    for batch in decoded_batches(iter_images(ctx.root, part_index, needed), int(ctx.params["batch_size"])):
        for uuid, _, error in batch:
            if error:
                errors[uuid] = error
        good = [(u, im) for u, im, _ in batch if im is not None]
        _face(good, want["face"], models, scores)
        _camera_trap(good, want["camera_trap"], models, scores)
        _museum(good, want["museum"], models, scores, area_of)
    return scores, errors


def _face(good: list, wanted: set[str], models: Models, scores: dict) -> None:
    chosen = [(u, im) for u, im in good if u in wanted]
    if chosen:
        for (uuid, _), found in zip(chosen, models.face.score([im for _, im in chosen]), strict=True):
            scores[uuid].update(face_count=found.face_count, face_prob_max=found.face_prob_max,
                                face_prob_mean=found.face_prob_mean)  # fmt: skip


def _camera_trap(good: list, wanted: set[str], models: Models, scores: dict) -> None:
    chosen = [(u, im) for u, im in good if u in wanted]
    if chosen:
        for (uuid, _), found in zip(chosen, models.camera_trap.score([im for _, im in chosen]), strict=True):
            scores[uuid].update(md_animal_count=found.md_animal_count,
                                md_animal_conf_max=found.md_animal_conf_max,
                                md_person_count=found.md_person_count,
                                md_vehicle_count=found.md_vehicle_count)  # fmt: skip


def _museum(good: list, wanted: set[str], models: Models, scores: dict, area_of: dict) -> None:
    from stages.filter.museum import nearest

    chosen = [(u, im) for u, im in good if u in wanted]
    if chosen:
        vectors = models.embedder.embed([im for _, im in chosen])
        labels, similarities = nearest(models.support, vectors, [area_of[u] for u, _ in chosen])
        for (uuid, _), label, similarity in zip(chosen, labels, similarities, strict=True):
            scores[uuid].update(museum_label=label, museum_similarity=float(similarity))


def _labels(models: Models) -> dict[str, str | None]:
    """What each filter's scores came from, as the loaded models identify themselves."""
    embedder = models.embedder.identity if models.embedder else None
    return {
        "face": S.model_label(models.face.identity if models.face else None),
        "camera_trap": S.model_label(models.camera_trap.identity if models.camera_trap else None),
        "museum": S.model_label(embedder),
        "occurrence": S.model_label(embedder),
    }


def _column(values: list[Any], name: str) -> pa.Array:
    return pa.array(values, S.SCHEMA.field(name).type)


def filter_partition(part: Partition, ctx: StageContext) -> PartitionOutput:
    params = ctx.params
    rows = joined_rows(ctx.root, part.index, ROW_COLUMNS)
    uuids = rows["uuid"].to_pylist()
    occurrence_file = part.payload.get("occurrences")
    occurrence = read_decisions(Path(occurrence_file), uuids) if occurrence_file else {}
    configured: dict[str, bool] = part.payload["configured"]
    keys = occurrence_keys(rows, scopes(params)["occurrence"])
    states = _states(rows, params, configured, occurrence, keys)
    wanted = {f for f in S.FILTERS if S.APPLIED in states[f]}
    if wanted:
        limit_torch_threads(params, ctx.config["cluster"])
    models = load_models(params, wanted, resolve_device(params["device"])) if wanted else Models()
    scores, errors = _score(part.index, ctx, uuids, states, rows["collection_area"].to_pylist(), models)
    labels = _labels(models)
    table = _table(rows, states, keys, scores, errors, occurrence, labels)
    return PartitionOutput(table=decide(table, params), rows_in=rows.num_rows)


def _table(
    rows: pa.Table, states: dict[str, list[str]], keys: list[str | None], scores: Scores,
    errors: dict[str, str], occurrence: Scores, labels: dict[str, str | None],
) -> pa.Table:  # fmt: skip
    uuids = rows["uuid"].to_pylist()
    columns: dict[str, list[Any]] = {name: [] for name in S.SCHEMA.names}
    for i, uuid in enumerate(uuids):
        found, occ = scores.get(uuid, {}), occurrence.get(uuid, {})
        failed = uuid in errors
        columns["uuid"].append(uuid)
        columns["status"].append("failed" if failed else "ok")
        columns["reason"].append(S.IMAGE_UNREADABLE if failed else None)
        columns["detail"].append(errors.get(uuid))
        columns["image_type"].append(rows["image_type"][i].as_py())
        columns["provider"].append(rows["provider"][i].as_py())
        for name in S.FILTERS:
            state = states[name][i]
            columns[f"{name}_filter"].append(S.NOT_RUN if failed and state == S.APPLIED else state)
        for name in ("face_count", "face_prob_max", "face_prob_mean", "md_animal_count", "md_animal_conf_max",
                     "md_person_count", "md_vehicle_count", "museum_label", "museum_similarity"):  # fmt: skip
            columns[name].append(found.get(name))
        applied_occ = states["occurrence"][i] == S.APPLIED
        columns["occurrence_key"].append(keys[i])
        columns["occurrence_images"].append(occ.get("occurrence_images", 1) if applied_occ else None)
        for name in ("occurrence_similarity", "occurrence_rank", "occurrence_camera_trap"):
            columns[name].append(occ.get(name) if applied_occ else None)
        for name in S.FILTERS:
            applied = columns[f"{name}_filter"][-1] == S.APPLIED
            columns[f"{name}_model"].append(labels.get(name) if applied else None)
    return pa.table([_column(columns[n], n) for n in S.SCHEMA.names], schema=S.SCHEMA)
