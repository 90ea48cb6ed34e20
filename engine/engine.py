"""The engine: the pipeline's stages in worker threads, fed by claims from the shared queue.

Public API (used by the console and the headless command alike): start / stop, submit paths as a
batch, pause / resume a batch, set workers and batch size of any stage, set the fast-path threshold,
and a cheap metrics snapshot. Files are claimed from PostgreSQL, so several engines on several hosts
share the work; a claim is a lease this engine renews while it holds the file.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from voxdock import __version__
from voxdock.engine import vad
from voxdock.engine.autotune import PERIOD_S, AutoTuner, Host
from voxdock.engine.config import MAX_BATCH_SIZE, MAX_WORKERS, ConfigSource, EngineConfig
from voxdock.engine.cpu import process_cpu_seconds
from voxdock.engine.decode_process import DecoderProcesses
from voxdock.engine.diarization import DEFAULT_FAST_PATH_THRESHOLD, Diarizer, build_diarizer
from voxdock.engine.diarization_note import DIARIZED
from voxdock.engine.discovery import discover
from voxdock.engine.events import EngineEvent, EventHub
from voxdock.engine.gpu import GpuMonitor
from voxdock.engine.handlers import (
    StageHandlers,
    Tunables,
    count_segments,
    count_voice_units,
)
from voxdock.engine.loader import LoadedModels, load_models
from voxdock.engine.metrics import EngineCounters, EngineSnapshot, mark_bottleneck
from voxdock.engine.models import ModelPlan
from voxdock.engine.oom import AdaptiveBatch, FaultInjector
from voxdock.engine.runtime import Stage, lower_thread_priority
from voxdock.engine.store_watch import StoreWatch
from voxdock.engine.vram import VramMeter, VramSnapshot, device_index, device_total_bytes, gib
from voxdock.engine.work import FileWork
from voxdock.storage import jobs, nodes
from voxdock.storage.database import Database, is_store_unavailable
from voxdock.storage.jobs import BatchProgress, JobRow
from voxdock.storage.nodes import NodeRow
from voxdock.storage.segments import ModelSet

log = logging.getLogger(__name__)

STAGES = ("decode", "vad", "asr", "diarize", "voice", "text", "store")
BATCHED_STAGES = ("asr", "diarize", "voice", "text")
HEARTBEAT_S = 2.0
BATCH_STATE_TTL_S = 0.5
METRICS_EVERY_S = 5.0


@dataclass(frozen=True)
class Submission:
    batch_id: int
    name: str
    queued: int
    skipped: int
    ignored: int  # files under the given folders that are not media


# What the engine hands its callers about batches, files and nodes (the console reads them through
# the engine, never from the store itself).
__all__ = ["BatchProgress", "Engine", "EngineError", "JobRow", "NodeRow", "Submission"]


class EngineState(StrEnum):
    """Where the engine is in its life; written under Engine._lock only (a StrEnum: it compares and
    prints as its name)."""

    CREATED = "created"
    LOADING = "loading"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class EngineError(RuntimeError):
    pass


def initial_fast_path_threshold(config: EngineConfig) -> float:
    """FAST_PATH_THRESHOLD when set, else the calibrated default."""
    if config.fast_path_threshold is not None:
        return config.fast_path_threshold
    return DEFAULT_FAST_PATH_THRESHOLD


def audio_budget_bytes(setting_gb: float | None) -> int:
    """IN_FLIGHT_AUDIO_GB, or a quarter of this host's memory (decoded audio: 230 MB per hour)."""
    if setting_gb is not None:
        return int(setting_gb * 1024**3)
    return int(psutil.virtual_memory().total / 4)


class Engine:
    def __init__(
        self,
        config: EngineConfig | ConfigSource,
        db: Database,
        plan: ModelPlan,
        *,
        models: LoadedModels | None = None,
        only_batches: Sequence[int] | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        # The CLI's settings (or anything else) can stand in: they know how to make the config.
        self.config = config if isinstance(config, EngineConfig) else config.engine_config()
        config = self.config
        self.db = db
        self.plan = plan
        self.models = models
        self.faults = faults or FaultInjector()
        self.events = EventHub()
        self.store = StoreWatch(db, self.events.emit)
        self.counters = EngineCounters()
        self.gpu = GpuMonitor()
        self.decoders = DecoderProcesses()  # children start with the first file
        self._froze = False  # whether this engine holds the heap frozen (_freeze_heap)
        self.node_id = f"{config.node_name or socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.state = EngineState.CREATED
        self.error: str | None = None
        self._only_batches = list(only_batches) if only_batches is not None else None
        self._lock = threading.Lock()
        self._in_flight: dict[int, FileWork] = {}
        self._claiming = threading.Event()
        self._wake = threading.Event()
        self._aborting = False
        self._shutting_down = False
        self._ready = threading.Event()
        self._stop_requested = False  # under _lock: a stop during model loading must stay a stop
        self._loader: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._batch_states: dict[int, tuple[str, float]] = {}
        self.tunables = Tunables(
            asr_beam_size=config.asr_beam_size,
            fast_path_threshold=initial_fast_path_threshold(config),
        )
        # Set once the models are on a CUDA device (engine/vram.py); None on CPU.
        self.vram_meter: VramMeter | None = None
        self.vram_budget_bytes: int | None = None
        self._vram_total_bytes: int | None = None
        self.adaptive_batches = {
            stage: AdaptiveBatch(size, self._backoff_hook(stage), self._measure_hook(stage))
            for stage, size in (
                ("asr", config.asr_batch_size),
                ("diarize", config.diarization_batch_size),
                ("voice", config.voice_enrollment_batch_size),
                ("text", config.text_embedding_batch_size),
            )
        }
        self.stages: dict[str, Stage] = {}
        self.tuner: AutoTuner | None = None
        self._pinned = set(config.pinned)
        self.audio_budget_bytes = audio_budget_bytes(config.in_flight_audio_gb)
        self._typical_audio_bytes = 0.0

    # --- context for stages --------------------------------------------------------------------
    @property
    def aborting(self) -> bool:
        return self._aborting

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def files_in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _take_in_flight(self, work: FileWork) -> bool:
        with self._lock:
            return self._in_flight.pop(work.job.job_id, None) is not None

    def fail(self, work: FileWork, stage: str, reason: str) -> None:
        if not self._take_in_flight(work):
            return
        work.release_audio()
        message = f"{stage}: {reason}"
        try:
            self.store.call(
                lambda: jobs.fail_job(self.db, work.job.job_id, work.job.source_id, message),
                self._store_wait_over,
            )
        except Exception as exc:  # its lease runs out and another attempt records it
            log.error("could not record the failure of %s: %s", work.path, exc)
        self.counters.file_failed(key=work.job.job_id)
        self.events.emit(
            EngineEvent(
                "failed",
                f"failed {work.path}: {message}",
                logging.WARNING,
                path=work.path,
                batch_id=work.job.batch_id,
                source_id=work.job.source_id,
            )
        )
        self._wake.set()

    def requeue(self, work: FileWork) -> None:
        if not self._take_in_flight(work):
            return
        work.release_audio()
        if not self.store.available:  # nothing to write to: the lease runs out and frees it instead
            log.warning("%s left claimed: the database is unavailable; its lease frees it", work.path)
        else:
            try:
                jobs.requeue_job(self.db, work.job.job_id, work.job.source_id)
            except Exception as exc:
                if is_store_unavailable(exc):
                    self.store.lost(exc)
                log.error("could not re-queue %s: %s", work.path, exc)
        self.counters.file_requeued(key=work.job.job_id)
        self.events.emit(
            EngineEvent("requeued", f"re-queued {work.path}", path=work.path, batch_id=work.job.batch_id)
        )

    def _store_wait_over(self) -> bool:
        """A call waiting for the store gives up when the engine hands its files back."""
        return self._aborting or self._shutting_down

    def _stored(self, work: FileWork, written: int) -> None:
        with self._lock:
            if work.job.job_id not in self._in_flight:
                return
        self.store.call(
            lambda: jobs.complete_job(self.db, work.job.job_id, self.node_id), self._store_wait_over
        )
        if not self._take_in_flight(work):
            return
        self.counters.file_done(work.duration_s, written, bool(work.fast_path), key=work.job.job_id)
        speakers = f", {work.speaker_count} speaker(s){_count_given(work)}" if work.speaker_count else ""
        # How they were found, where it was not plain diarization: the fast path, by channel, given 1.
        # The count given is said once, by `_count_given`.
        method = work.diarization.partition(", ")[0]
        how = ("" if method in ("", DIARIZED) else f"; {method}") + (
            f"; {work.decode_note}" if work.decode_note else ""
        )
        self.events.emit(
            EngineEvent(
                "done",
                f"done {work.path}: {written} segments, {work.duration_s:.1f} s{speakers}{how}",
                path=work.path,
                batch_id=work.job.batch_id,
                source_id=work.job.source_id,
                segments=written,
                duration_s=work.duration_s,
            )
        )
        self._wake.set()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, *, wait: bool = False, timeout: float = 600.0) -> None:
        """Register this node, load models (in the background unless preloaded), start the stages."""
        with self._lock:
            if self.state != EngineState.CREATED:
                raise EngineError(f"engine already {self.state}")
            self.state = EngineState.LOADING
        nodes.register_node(self.db, self.node_id, socket.gethostname(), os.getpid(), __version__)
        self.gpu.start()
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(lambda: self.store.run(lambda: self._shutting_down), "store-watch")
        self._loader = self._spawn(self._load_and_run, "loader")
        if wait and not self.wait_ready(timeout):
            raise EngineError(self.error or "the engine did not become ready in time")

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.state == EngineState.RUNNING

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            lower_thread_priority()  # before the loader starts the model libraries' thread pools
            target()

        thread = threading.Thread(target=run, name=f"voxdock-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _load_and_run(self) -> None:
        try:
            if self.models is None:
                self.models = load_models(
                    self.plan,
                    device_setting=self.config.compute_device,
                    compute_type_setting=self.config.compute_type,
                    asr_workers=self.config.asr_workers,
                    cache_dir=self.config.cache_dir,
                    progress=lambda m: self.events.emit(EngineEvent("engine", m)),
                )
            with self._lock:
                if self._stop_requested:  # stopped while loading: start nothing
                    self.state = EngineState.STOPPED
                    self._ready.set()
                    return
            for choice in self.plan.all():
                if choice.note:  # e.g. pyannote asked for but unavailable: say which backend runs
                    self.events.emit(EngineEvent("engine", f"{choice.stage}: {choice.note}", logging.WARNING))
            self._set_up_vram(self.models.device)
            vad_blocks = vad.device_blocks()  # Silero on the GPU: its back-offs shown as the stages' are
            if vad_blocks is not None:
                vad_blocks.report_to(self._backoff_hook("vad"), self._measure_hook("vad"))
            self._build_stages(self.models)
            # The models are half a million Python objects that live as long as the engine, and every
            # full collection walked them all with the interpreter lock held: up to 0.4 s in which no
            # stage's thread ran Python (throughput bench --gil: longest wait 400 -> 44 ms, lock held
            # 3.6 -> 2.3 s per audio hour). Frozen, collections look only at what the work creates.
            _freeze_heap()
            self._froze = True
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.state = EngineState.FAILED
            self.events.emit(EngineEvent("engine", f"engine failed to start: {self.error}", logging.ERROR))
            self._ready.set()
            return
        with self._lock:
            if self._stop_requested:
                self._ready.set()
                return
            self.state = EngineState.RUNNING
        if self.config.auto_tune:
            self._start_tuner()
        self._claiming.set()
        self._ready.set()
        self.events.emit(
            EngineEvent("engine", f"engine running as node {self.node_id} on {self.models.device}")
        )
        self._claim_loop()

    def _build_stages(self, models: LoadedModels) -> None:
        diarizer = self._make_diarizer(models)
        model_set = ModelSet(
            asr=models.names["asr"],
            diarizer=diarizer.name,
            voice=models.names["voice"],
            text_model=models.names["text"],
        )
        handlers = StageHandlers(
            models=models,
            diarizer=diarizer,
            db=self.db,
            node_id=self.node_id,
            tunables=self.tunables,
            batches=self.adaptive_batches,
            faults=self.faults,
            model_set=model_set,
            on_stored=self._stored,
            store_call=lambda write: self.store.call(write, self._store_wait_over),
            on_progress=lambda work, audio_s: self.counters.file_progress(work.job.job_id, audio_s),
            decoders=self.decoders,
            handing_back=lambda: self._aborting,
        )
        s = self.config
        workers = {
            "decode": s.decode_workers,
            "vad": s.vad_workers,
            "asr": s.asr_workers,
            "diarize": s.diarization_workers,
            "voice": s.voice_workers,
            "text": s.text_workers,
            "store": s.storage_workers,
        }
        # name -> keyword arguments of its Stage: the handler, and for batched stages the batch knob
        specs: dict[str, dict[str, Any]] = {
            "decode": {"handle": handlers.decode, "gate": self._may_start},
            "vad": {"handle": handlers.vad},
            "asr": {"handle": handlers.asr},
            "diarize": {"handle": handlers.diarize},
            "voice": {"handle_many": handlers.voice, "units": count_voice_units},
            "text": {"handle_many": handlers.text, "units": count_segments},
            "store": {"handle": handlers.store},
        }
        inboxes = {name: queue.Queue[FileWork](maxsize=max(4, s.asr_workers * 2)) for name in STAGES}
        stages: dict[str, Stage] = {}
        for i, name in enumerate(STAGES):
            outbox = inboxes[STAGES[i + 1]] if i + 1 < len(STAGES) else None
            stages[name] = Stage(
                name,
                self,
                inboxes[name],
                outbox,
                workers=workers[name],
                batch=self.adaptive_batches.get(name),
                **specs[name],
            )
        self.stages = stages  # whole, so a snapshot from another thread never sees half a table
        for stage in stages.values():
            stage.start()

    def _make_diarizer(self, models: LoadedModels) -> Diarizer:
        def warn(message: str) -> None:
            self.events.emit(EngineEvent("engine", message, logging.WARNING))

        # Built now, not by the first worker to need it (an ONNX export happens once).
        return build_diarizer(
            voice=models.voice,
            batch=self.adaptive_batches["diarize"],
            faults=self.faults,
            device=models.device,
            onnx_cache=self.config.cache_dir,
            pyannote_snapshot=self.plan.diarization.pyannote_pipeline,
            warn=warn,
        )

    def _may_start(self, work: FileWork) -> bool:
        """A claimed file starts only while its batch is running (another node may have paused it).
        The batch's state is read at most every BATCH_STATE_TTL_S; while the store cannot say, the
        last answer stands (a file already claimed goes on: the claim itself saw the batch running)."""
        batch = work.job.batch_id
        now = time.monotonic()
        with self._lock:
            cached = self._batch_states.get(batch)
        if (cached is None or now - cached[1] > BATCH_STATE_TTL_S) and self.store.available:
            try:
                cached = (jobs.batch_state(self.db, batch), now)
            except Exception as exc:
                if is_store_unavailable(exc):
                    self.store.lost(exc)
                else:
                    log.warning("reading the state of batch %s failed: %s", batch, exc)
            else:
                with self._lock:
                    self._batch_states[batch] = cached
        return cached is None or cached[0] == "running"

    def max_in_flight(self) -> int:
        """Files held at once: one for every worker of every stage, and one more waiting for each
        worker of the stage with the most (the one given workers because it is the slowest), so
        every configured worker can be busy. More would only keep files from other nodes and from
        a pause; memory is bounded apart, by `audio_room`."""
        if not self.stages:
            return 1
        workers = [stage.workers for stage in self.stages.values()]
        return sum(workers) + max(workers)

    def audio_room(self) -> bool:
        """Whether another file's decoded audio fits in the budget beside what is held now. A file
        not yet decoded counts as the typical decoded file of this run (as the whole budget until one
        has been seen); with nothing in flight a file is always admitted, however long."""
        with self._lock:
            works = list(self._in_flight.values())
        if not works:
            return True
        held = [w.samples.nbytes for w in works if w.samples is not None]
        if held:
            self._typical_audio_bytes = sum(held) / len(held)
        pending = sum(1 for w in works if w.samples is None and w.duration_s == 0.0)
        typical = self._typical_audio_bytes or self.audio_budget_bytes
        return sum(held) + pending * typical < self.audio_budget_bytes

    def _claim_loop(self) -> None:
        stage = self.stages["decode"]
        while not self._shutting_down:
            # Claim lazily: only when decoding has room, so a pause finds few files claimed and unstarted.
            if (
                not self._claiming.is_set()
                or self.files_in_flight() >= self.max_in_flight()
                or stage.inbox.qsize() >= stage.workers
                or not self.audio_room()
            ):
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            try:
                with self._lock:
                    holding = list(self._in_flight)
                # Files still in flight here are never claimed again, even when their leases ran out
                # during a store outage: a second copy would overwrite the first's entry in flight
                # and leave its source marked as processing.
                job = jobs.claim_next(
                    self.db,
                    self.node_id,
                    lease_seconds=self.config.job_lease_seconds,
                    max_attempts=self.config.job_max_attempts,
                    only_batches=self._only_batches,
                    holding=holding,
                )
            except Exception as exc:
                if is_store_unavailable(exc):
                    self.store.lost(exc)
                    self.store.wait_until_back(lambda: self._shutting_down)
                else:
                    log.warning("claiming from the queue failed (will retry): %s", exc)
                    self._wake.wait(2.0)
                continue
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            work = FileWork(job=job)
            with self._lock:
                self._in_flight[job.job_id] = work
            self.counters.file_claimed(key=job.job_id)
            self.events.emit(
                EngineEvent(
                    "claimed",
                    f"started {job.path}",
                    logging.DEBUG,
                    path=job.path,
                    batch_id=job.batch_id,
                    source_id=job.source_id,
                )
            )
            while True:
                if self._aborting:
                    self.requeue(work)
                    break
                try:
                    stage.inbox.put(work, timeout=0.25)
                    break
                except queue.Full:
                    continue

    def _heartbeat_loop(self) -> None:
        last_metrics = 0.0
        last_sweep = 0.0
        while not self._shutting_down:
            now = time.monotonic()
            if not self.store.available:  # the watcher probes; nothing to renew until it is back
                time.sleep(0.25)
                continue
            try:
                with self._lock:
                    held = list(self._in_flight)
                if held:
                    jobs.renew_leases(
                        self.db, self.node_id, held, lease_seconds=self.config.job_lease_seconds
                    )
                if now - last_metrics >= METRICS_EVERY_S:
                    nodes.heartbeat(
                        self.db, self.node_id, self.snapshot().to_json(), state=self._node_state()
                    )
                    last_metrics = now
                if now - last_sweep >= 30.0:
                    jobs.fail_abandoned(self.db, max_attempts=self.config.job_max_attempts)
                    last_sweep = now
            except Exception as exc:
                if is_store_unavailable(exc):
                    self.store.lost(exc)
                else:
                    log.warning("heartbeat to the store failed (will retry): %s", exc)
            time.sleep(min(HEARTBEAT_S, self.config.job_lease_seconds / 4))

    def _node_state(self) -> str:
        # A failed engine takes no work: to the other nodes it is as good as stopped.
        return {"stopping": "stopping", "stopped": "stopped", "failed": "stopped"}.get(self.state, "running")

    def _hand_back_now(self) -> None:
        """Files in flight go back to the queue: each stage gives up its file at its next block of
        work (ASR at its next segments, diarization at its next block of chunks), decoding at once."""
        self._aborting = True
        self.decoders.abort()

    def stop(self, mode: str = "finish", timeout: float | None = None) -> bool:
        """Stop claiming; then either let in-flight files finish ("finish") or give them back to the
        queue at the next stage boundary ("requeue"). Returns True when nothing was left in flight."""
        if mode not in ("finish", "requeue"):
            raise ValueError("stop mode is 'finish' or 'requeue'")
        with self._lock:
            self._stop_requested = True
            previous = self.state
            if previous in (EngineState.STOPPED, EngineState.CREATED):
                self.state = EngineState.STOPPED
                return True
            self.state = EngineState.STOPPING
        loader = self._loader
        if loader is not None and loader is not threading.current_thread():
            # Model loading cannot be cut short; leaving it running while the process exits aborts
            # in the native runtimes' threads, so it is waited for whatever `timeout` says (that is
            # for the files in flight), also by a second stop that interrupted the first. Once
            # loaded, the loader thread claims files: it is joined only when it saw the stop while
            # loading, and so ends at once.
            self._ready.wait()
            if previous == EngineState.LOADING:
                loader.join()
        self._claiming.clear()
        if mode == "requeue":
            self._hand_back_now()
        self.events.emit(
            EngineEvent(
                "engine",
                f"stopping ({'finishing' if mode == 'finish' else 're-queuing'} "
                f"{self.files_in_flight()} file(s) in flight)",
            )
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.files_in_flight() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        drained = self.files_in_flight() == 0
        if not drained:  # out of time: hand the rest back rather than leave them claimed
            self._hand_back_now()
            with self._lock:
                left = list(self._in_flight.values())

            # In a thread of its own: a second Ctrl-C lands in this (the main) thread, and between
            # taking a file off the in-flight table and writing it back to the queue it would leave
            # the file claimed until its lease runs out. Not a daemon: the process waits for it.
            def hand_back() -> None:
                for work in left:
                    self.requeue(work)

            handing = threading.Thread(target=hand_back, name="voxdock-hand-back")
            handing.start()
            handing.join()
        self._shutting_down = True
        self._wake.set()
        for stage in self.stages.values():
            stage.join(timeout=10)
        self.decoders.close()
        if self._froze:
            self._froze = False
            _thaw_heap()  # the models may go now: let the collector see them again
        self.gpu.stop()
        try:
            if self.store.available:
                nodes.heartbeat(self.db, self.node_id, self.snapshot().to_json(), state="stopped")
        except Exception as exc:
            log.warning("could not record the node as stopped: %s", exc)
        with self._lock:
            self.state = EngineState.STOPPED
        self.events.emit(EngineEvent("engine", "engine stopped"))
        return drained

    # --- work ----------------------------------------------------------------------------------
    def submit(
        self,
        paths: Iterable[str | Path],
        *,
        batch_name: str | None = None,
        skip_existing: bool = True,
        options: dict[str, Any] | None = None,
    ) -> Submission:
        """Find media under `paths`, register them, and queue them as a new batch."""
        paths = list(paths)
        found = discover(paths)
        name = batch_name or time.strftime("batch-%Y%m%d-%H%M%S")
        batch_id = jobs.create_batch(self.db, name, options=options or {}, created_by=self.node_id)
        # Largest first: a long file started last would run alone at the end while the other workers
        # idle (longest-processing-time-first scheduling); the claim order follows the queue order.
        files = sorted(found.files, key=lambda f: f.size_bytes, reverse=True)
        source_ids = jobs.register_sources(self.db, files)
        result = jobs.enqueue(self.db, batch_id, source_ids, skip_existing=skip_existing, options=options)
        stored_name = next((b.name for b in jobs.batch_progress(self.db, [batch_id])), name)
        self.counters.files_skipped_add(result.skipped)
        skipped = f", {result.skipped} already stored (skipped)" if result.skipped else ""
        self.events.emit(
            EngineEvent(
                "batch", f"batch {stored_name}: {result.queued} file(s) queued{skipped}", batch_id=batch_id
            )
        )
        self._wake.set()
        return Submission(batch_id, stored_name, result.queued, result.skipped, found.ignored)

    def pause(self, batch_id: int) -> None:
        jobs.set_batch_state(self.db, batch_id, "paused")
        self._forget_batch_state(batch_id)
        self.events.emit(
            EngineEvent("batch", f"batch {batch_id} paused (in-flight files finish)", batch_id=batch_id)
        )

    def resume(self, batch_id: int) -> None:
        jobs.set_batch_state(self.db, batch_id, "running")
        self._forget_batch_state(batch_id)
        self.events.emit(EngineEvent("batch", f"batch {batch_id} resumed", batch_id=batch_id))
        self._wake.set()

    def cancel(self, batch_id: int) -> jobs.CancelResult:
        """No file of this batch starts any more; its queued files are cancelled (in flight finish)."""
        result = jobs.cancel_batch(self.db, batch_id)
        self._forget_batch_state(batch_id)
        self.events.emit(
            EngineEvent(
                "batch",
                f"batch {batch_id} cancelled: {result.cancelled} file(s) not processed, "
                f"{result.in_flight} in flight finish",
                batch_id=batch_id,
            )
        )
        self._wake.set()
        return result

    def retry(self, batch_id: int) -> int:
        """Queue the batch's failed and cancelled files again; returns how many."""
        queued = jobs.retry_batch(self.db, batch_id)
        self._forget_batch_state(batch_id)
        self.events.emit(
            EngineEvent("batch", f"batch {batch_id}: {queued} file(s) queued again", batch_id=batch_id)
        )
        self._wake.set()
        return queued

    def _forget_batch_state(self, batch_id: int) -> None:
        with self._lock:
            self._batch_states.pop(batch_id, None)

    def restrict_to_batches(self, batch_ids: Sequence[int] | None) -> None:
        """Claim only from these batches (a headless ingest works on its own batch alone)."""
        self._only_batches = list(batch_ids) if batch_ids is not None else None
        self._wake.set()

    def batches(self, limit: int = 50) -> list[BatchProgress]:
        """Every batch in the shared store, newest first, with its progress."""
        return jobs.batch_progress(self.db, limit=limit)

    def batch_files(self, batch_id: int, limit: int = 500) -> list[JobRow]:
        """The files of a batch with their state and, for failed ones, the reason."""
        return jobs.batch_jobs(self.db, batch_id, limit=limit)

    def cluster_nodes(self, seen_within_s: float = 600.0) -> list[NodeRow]:
        """Every engine that wrote a heartbeat recently, this one included, with its metrics."""
        return nodes.list_nodes(self.db, seen_within_s=seen_within_s)

    def in_flight_files(self) -> list[FileWork]:
        with self._lock:
            return list(self._in_flight.values())

    # --- tuning --------------------------------------------------------------------------------
    def set_workers(self, stage: str, workers: int) -> None:
        """The operator's choice: applied at once and pinned (self-tuning leaves it) until released."""
        target = self._stage(stage)
        target.set_workers(workers)
        self._pin(f"{stage}.workers")
        self.events.emit(EngineEvent("tuning", f"{stage}: workers set to {workers}"))
        self._wake.set()

    def release(self, stage: str) -> None:
        """Hand a stage's knobs (workers and batch size) back to self-tuning."""
        self._stage(stage)
        with self._lock:
            self._pinned -= {f"{stage}.workers", f"{stage}.batch"}
        automatic = " to self-tuning" if self.tuner is not None else " (self-tuning is off)"
        self.events.emit(EngineEvent("tuning", f"{stage}: released{automatic}"))

    def _pin(self, knob: str) -> None:
        with self._lock:
            self._pinned.add(knob)
            if self.tuner is not None:
                self.tuner.pin(knob)  # also ends a trial on that knob

    # --- self-tuning ---------------------------------------------------------------------------
    def _start_tuner(self) -> None:
        assert self.models is not None
        on_gpu = self.models.device.startswith("cuda")
        cores = os.cpu_count() or 1

        def max_workers(stage: str) -> int:
            # A CPU stage's worker wants a core; a GPU stage's workers mostly wait on the device.
            gpu_stage = on_gpu and stage in BATCHED_STAGES
            return min(MAX_WORKERS, 2 * cores if gpu_stage else cores)

        with self._lock:
            self.tuner = AutoTuner(
                # One set, the engine's: what the operator pins, the tuner sees.
                apply=self._tuned_workers,
                max_workers=max_workers,
                on_gpu=on_gpu,
                pinned=self._pinned,
            )
            self.tuner.start([stage.snapshot() for stage in self.stages.values()])
        self._spawn(self._tune_loop, "tuner")

    def _tuned_workers(self, stage: str, workers: int) -> None:
        self.stages[stage].set_workers(workers)
        self._wake.set()

    def _tune_loop(self) -> None:
        psutil.cpu_percent(None)  # the first reading starts the measuring interval
        cores = os.cpu_count() or 1
        while not self._shutting_down:
            deadline = time.monotonic() + PERIOD_S
            while time.monotonic() < deadline and not self._shutting_down:
                time.sleep(0.2)
            if self._shutting_down or self.state != EngineState.RUNNING:
                continue
            snapshot = self.snapshot()
            utilisation = [g.utilization_pct for g in snapshot.gpus if g.utilization_pct is not None]
            host = Host(
                cpu_busy=psutil.cpu_percent(None) / 100.0,
                gpu_busy=sum(utilisation) / len(utilisation) / 100.0 if utilisation else None,
                cores=cores,
            )
            with self._lock:
                tuner = self.tuner
                if tuner is None:
                    return
                changes = tuner.look(snapshot, host, time.monotonic())
            for change in changes:
                if change.workers_to == change.workers_from:
                    message = f"auto: {change.stage} {change.reason}"
                else:
                    step = f"{change.workers_from} -> {change.workers_to}"
                    message = f"auto: {change.stage} workers {step} ({change.reason})"
                self.events.emit(EngineEvent("tuning", message))

    def set_batch_size(self, stage: str, size: int) -> None:
        if stage not in BATCHED_STAGES:
            raise ValueError(f"{stage} has no batch size (batched stages: {', '.join(BATCHED_STAGES)})")
        if not 1 <= size <= MAX_BATCH_SIZE:
            raise ValueError(f"{stage}: batch size must be between 1 and {MAX_BATCH_SIZE}, not {size}")
        self.adaptive_batches[stage].configure(size)
        self._pin(f"{stage}.batch")
        self.events.emit(EngineEvent("tuning", f"{stage}: batch size set to {size}"))

    def set_fast_path_threshold(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the fast-path threshold must be between 0 and 1, not {value}")
        self.tunables.fast_path_threshold = value
        self.events.emit(EngineEvent("tuning", f"fast-path threshold set to {value:.3f}"))

    def _stage(self, name: str) -> Stage:
        if name not in STAGES:
            raise ValueError(f"no stage named {name!r} (stages: {', '.join(STAGES)})")
        if not self.stages:
            raise EngineError("the engine is still loading its models")
        return self.stages[name]

    def _measure_hook(self, stage: str) -> Callable[[int], AbstractContextManager[object]]:
        def measure(items: int) -> AbstractContextManager[object]:
            meter = self.vram_meter
            return meter.measure(stage, items) if meter is not None else nullcontext()

        return measure

    def _set_up_vram(self, device: str) -> None:
        """GPU_MEMORY_BUDGET in bytes of this device's memory, and the meter of every model call."""
        if not device.startswith("cuda"):
            return  # no budget on CPU: the snapshot says so
        index = device_index(device)
        total = device_total_bytes(index)  # from CUDA: right for a MIG slice too
        if total is None and self.gpu.available:
            total = self.gpu.total_bytes(index)
        if total is None:
            self.events.emit(
                EngineEvent(
                    "engine",
                    "VRAM budget: neither CUDA nor NVML can tell the device's memory; none applies",
                    logging.WARNING,
                )
            )
            return
        setting = self.config.gpu_memory_budget
        self._vram_total_bytes = total
        self.vram_budget_bytes = setting.resolve(total)
        self.vram_meter = VramMeter(index, lambda: self.gpu.memory_use(index))
        self.events.emit(
            EngineEvent(
                "engine",
                f"VRAM budget {gib(self.vram_budget_bytes)} of {gib(total)} GiB ({setting.describe()})",
            )
        )

    def _vram(self) -> VramSnapshot | None:
        if self.models is None:
            return None
        setting = self.config.gpu_memory_budget.describe()
        meter = self.vram_meter
        if meter is None:  # on CPU, or a device NVML cannot measure: no budget applies
            return VramSnapshot(setting, None, None, None)
        use = self.gpu.memory_use(meter.device_index)
        return VramSnapshot(
            setting,
            self.vram_budget_bytes,
            use[0] if use else None,
            self._vram_total_bytes,
            use[1] if use else None,
            meter.stages(),
            meter.device_index,
        )

    def _backoff_hook(self, stage: str) -> Callable[[int, int], None]:
        def hook(failed: int, now: int) -> None:
            if stage in self.stages:
                self.stages[stage].metrics.oom_backoff()
            self.events.emit(
                EngineEvent(
                    "tuning",
                    f"{stage}: out of GPU memory at batch {failed}; retrying the same items at {now}",
                    logging.WARNING,
                )
            )

        return hook

    # --- metrics -------------------------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        stages = [stage.snapshot() for stage in self.stages.values()]
        return EngineSnapshot(
            taken_at=time.time(),
            node_id=self.node_id,
            state=str(self.state),
            stages=mark_bottleneck(stages),
            totals=self.counters.snapshot(),
            gpus=self.gpu.latest(),
            gpu_available=self.gpu.available,
            models=dict(self.models.names) if self.models else {},
            fast_path_threshold=self.tunables.fast_path_threshold,
            store_problem=self.store.problem(),
            auto_tune=self.tuner is not None,
            pinned=sorted(self._pinned),
            vram=self._vram(),
            # the decoder children's CPU is in the decode stage's figures: in the process's too
            process_cpu_s=process_cpu_seconds() + self.decoders.cpu_s,
        )


# gc.freeze is process-wide: the heap stays frozen while any engine of this process runs.
_frozen_by = 0
_frozen_lock = threading.Lock()


def _freeze_heap() -> None:
    global _frozen_by
    with _frozen_lock:
        _frozen_by += 1
        gc.collect()
        gc.freeze()


def _thaw_heap() -> None:
    global _frozen_by
    with _frozen_lock:
        _frozen_by = max(0, _frozen_by - 1)
        if _frozen_by == 0:
            gc.unfreeze()


def _count_given(work: FileWork) -> str:
    """What the operator said of the speakers, where the file came out otherwise: a voice too brief to
    tell apart gets no turn, and no voice is cut in two to make up a count."""
    options, found = work.speakers, work.speaker_count or 0
    if options.num_speakers is not None and found != options.num_speakers:
        return f" ({options.num_speakers} given)"
    if options.min_speakers is not None and found < options.min_speakers:
        return f" (at least {options.min_speakers} given)"
    return ""
