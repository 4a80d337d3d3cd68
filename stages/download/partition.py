"""One partition's work: read 01's ok rows, download them, build the manifest table and the image
store file; and the retry of a committed partition's failed rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from pipeline.errors import InputError
from pipeline.local_images import is_local_url
from pipeline.stage import Partition, PartitionOutput, StageContext
from stages.download.allocator import tune_allocator
from stages.download.attempt import AttemptEnv
from stages.download.fetch import FetchError, host_name, parse_target
from stages.download.local import read_local
from stages.download.manifest import RowInput, build_table, manifest_row
from stages.download.progress import RowProgress
from stages.download.scheduler import RowFinal, RowTask, Scheduler
from stages.download.settings import DownloadSettings, load_settings
from stages.download.store import Spool, iter_store, store_rel_path, write_store

UPSTREAM_STAGE = "01_ingest"
UPSTREAM_COLUMNS = ["uuid", "status", "url", "host"]
# 01 columns of local images; roots written before local sources existed do not have them.
LOCAL_COLUMNS = ["local_root", "local_member"]


def _settings(ctx: StageContext) -> DownloadSettings:
    settings = load_settings(ctx.params)
    tune_allocator()
    # Pillow's own decompression-bomb guard, for decoders that allocate before we look.
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    return settings


def _host(url: str, fallback: str) -> str:
    """The politeness key of a row: its URL's host name (as fetch.Target.host), no port."""
    try:
        return parse_target(url, ("http", "https")).host
    except FetchError:
        return host_name(fallback or "")


def _spool(ctx: StageContext, index: int) -> Spool:
    """A scratch file named with the run's tag: a killed run's spool is removed by the next run
    that holds the root (pipeline.litter), whatever became of the process that wrote it."""
    return Spool(ctx.temp_path(f"-part-{index:05d}.spool"))


def _env(part: Partition, settings: DownloadSettings) -> AttemptEnv:
    return AttemptEnv(settings, dict(part.payload.get("host_shares", {})),
                      default_share=int(part.payload.get("slots", 1)))  # fmt: skip


def _progress(ctx: StageContext, index: int, rows: int) -> RowProgress:
    run = ctx.config["run"]
    return RowProgress(f"02_download part-{index:05d}", rows, float(run["progress_interval_s"]),
                       enabled=bool(run["progress"]))  # fmt: skip


def read_upstream(ctx: StageContext, upstream: str, index: int) -> list[RowInput]:
    path = ctx.manifest_path(upstream, index)
    present = set(pq.read_schema(path).names)
    columns = UPSTREAM_COLUMNS + [c for c in LOCAL_COLUMNS if c in present]
    table = ctx.read_manifest(upstream, index, columns=columns)
    ok = table.filter(pc.equal(table["status"], "ok"))
    if ok["url"].null_count:
        raise InputError(path, "ok rows with a null url")
    n = ok.num_rows
    roots = ok["local_root"].to_pylist() if "local_root" in ok.column_names else [None] * n
    members = ok["local_member"].to_pylist() if "local_member" in ok.column_names else [None] * n
    return [
        RowInput(u, url, h or "", root, member)
        for u, url, h, root, member in zip(
            ok["uuid"].to_pylist(), ok["url"].to_pylist(), ok["host"].to_pylist(), roots, members,
            strict=True,
        )
    ]


def _is_local(row: RowInput) -> bool:
    return row.local_root is not None and is_local_url(row.url)


def download_rows(part: Partition, ctx: StageContext, upstream: str) -> PartitionOutput:
    settings = _settings(ctx)
    rows = read_upstream(ctx, upstream, int(part.payload["upstream"]))
    local = {i: row for i, row in enumerate(rows) if _is_local(row)}
    tasks = [RowTask(i, row.url, _host(row.url, row.host)) for i, row in enumerate(rows) if i not in local]
    spool = _spool(ctx, part.index)
    try:
        progress = _progress(ctx, part.index, len(rows))
        finals = read_local(local, settings, spool, progress)
        finals.update(Scheduler(tasks, _env(part, settings), spool, progress).run())
        table = build_table([manifest_row(row, finals[i]) for i, row in enumerate(rows)])
        images = (
            (row.uuid, spool.read(*finals[i].spooled)) for i, row in enumerate(rows) if _stored(finals[i])
        )
        store = ctx.temp_path(".parquet")
        write_store(store, images, settings.store_row_group_rows)
    finally:
        spool.close()
    return PartitionOutput(table, rows_in=len(rows), side_files={store_rel_path(part.index): store})


def _stored(final: RowFinal) -> bool:
    if final.outcome.reason is not None:
        return False
    assert final.spooled is not None, "an ok row always has its image spooled"
    return True


def retry_rows(part: Partition, ctx: StageContext, previous: pa.Table, reasons: set[str]) -> PartitionOutput:
    """Re-attempt the failed rows whose reason is in `reasons`; every other row (and its stored
    image) is kept as it was. Attempts accumulate."""
    settings = _settings(ctx)
    old_rows = previous.to_pylist()
    chosen = [i for i, r in enumerate(old_rows) if r["status"] == "failed" and r["reason"] in reasons]
    upstream = {r.uuid: r for r in read_upstream(ctx, UPSTREAM_STAGE, int(part.payload["upstream"]))}
    chosen_uuids = {i: old_rows[i]["uuid"] for i in chosen}
    local = {i: upstream[u] for i, u in chosen_uuids.items() if u in upstream and _is_local(upstream[u])}
    tasks = [
        RowTask(
            i, old_rows[i]["url"], _host(old_rows[i]["url"], old_rows[i]["host"]),
            prior_attempts=old_rows[i]["attempts"] or 0,
            prior_log=(old_rows[i]["attempt_log"] or "").split(),
            prior_retry_after_s=old_rows[i]["retry_after_s"] or 0.0,
        )
        for i in chosen
        if i not in local
    ]  # fmt: skip
    old_store = ctx.root / store_rel_path(part.index)
    if not old_store.exists():
        raise InputError(old_store, "image store partition missing; rerun the stage to rebuild it")
    spool = _spool(ctx, part.index)
    try:
        progress = _progress(ctx, part.index, len(chosen))
        finals = read_local(local, settings, spool, progress)
        finals.update(Scheduler(tasks, _env(part, settings), spool, progress).run())
        for i, final in finals.items():
            if i in local:  # attempts accumulate, as for downloads
                previous_row = old_rows[i]
                final.attempts += previous_row["attempts"] or 0
                final.log = (previous_row["attempt_log"] or "").split() + final.log
        rows = list(old_rows)
        for i in chosen:
            r = old_rows[i]
            rows[i] = manifest_row(RowInput(r["uuid"], r["url"], r["host"]), finals[i])
        table = build_table(rows)
        store = ctx.temp_path(".parquet")
        images = _merged_images(rows, old_rows, finals, spool, old_store)
        write_store(store, images, settings.store_row_group_rows)
    finally:
        spool.close()
    return PartitionOutput(table, rows_in=len(rows), side_files={store_rel_path(part.index): store})


def _merged_images(
    rows: list[dict], old_rows: list[dict], finals: dict[int, RowFinal], spool: Spool, old: Path
):
    """Manifest-ordered images: kept ones streamed from the old store, new ones from the spool."""
    kept = iter_store(old)
    for i, row in enumerate(rows):
        if row["status"] != "ok":
            continue
        if i in finals:
            yield row["uuid"], spool.read(*finals[i].spooled)
            continue
        uuid, jpeg = next(kept)
        if uuid != row["uuid"] or old_rows[i]["status"] != "ok":
            raise InputError(old, f"image store out of step with the manifest at {row['uuid']}")
        yield uuid, jpeg
