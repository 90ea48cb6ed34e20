"""Self-tuning: give the stage that limits throughput more workers while the host has room for them,
and take a change back when throughput did not follow.

Every period the tuner looks at the engine's snapshot. While files are waiting (a backlog: stage
queues hold files), the bottleneck is the stage with the highest recent RTF per worker; when all its
workers were busy through the period, the CPU (or, for a stage whose work runs on the GPU, the GPU)
has headroom, and the knob is not pinned, it adds a worker and starts a trial. After the trial's
settling time it compares the engine's pace (audio hours per hour over the last window) with the pace
before: a gain under MIN_GAIN takes the change back and leaves that stage alone for a cool-down. A
stage whose workers idle for a long while gives back workers it was given, never below where it
started. Knobs the operator set (in the settings or live) are pinned: the tuner never touches them.
On a GPU no stage grows when the device memory it would then take passes GPU_MEMORY_BUDGET, or when
use is already over it (engine/vram.py predicts from each stage's measured calls); the tuner says once
why it held back, and again only after it grew or the budget let it.

The decisions are a pure function of the snapshots and a clock, so they are tested without models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from voxdock.engine.metrics import EngineSnapshot, StageSnapshot, mark_bottleneck
from voxdock.engine.vram import workers_over_budget

PERIOD_S = 5.0  # how often the tuner looks
SETTLE_S = 45.0  # a trial runs this long before its pace is judged (more than the pace's window)
MIN_GAIN = 1.04  # what a change must bring to stay
COOL_DOWN_S = 300.0  # a stage whose last trial failed is left alone this long
IDLE_S = 120.0  # a stage with workers idle this long gives one back
CPU_HEADROOM = 0.85  # the host's CPU share in use above which no CPU stage grows
GPU_HEADROOM = 0.80  # GPU utilisation above which no GPU stage grows
BUSY_ENOUGH = 0.90  # share of a stage's worker-time busy over a period for it to count as saturated
IDLE_BELOW = 0.30
GPU_STAGES = ("asr", "diarize", "voice", "text")  # their model calls run on the device when there is one


@dataclass(frozen=True)
class Change:
    stage: str
    workers_from: int
    workers_to: int
    reason: str


@dataclass
class Trial:
    change: Change
    started: float
    pace_before: float


@dataclass
class _StageState:
    busy_s: float = 0.0  # busy worker-seconds at the last look
    idle_since: float | None = None
    cool_until: float = 0.0
    floor: int = 1  # the workers it started with: never given back below
    held: str | None = None  # why the VRAM budget last held it back, until it no longer does


@dataclass
class Host:
    """What the host has left: CPU busy share (0..1 of all cores) and GPU utilisation (0..1, None
    without a GPU)."""

    cpu_busy: float
    gpu_busy: float | None
    cores: int


@dataclass
class AutoTuner:
    apply: Callable[[str, int], None]  # sets a stage's workers without pinning it
    max_workers: Callable[[str], int]
    on_gpu: bool = False
    pinned: set[str] = field(default_factory=set)  # "asr.workers", ...
    period_s: float = PERIOD_S
    settle_s: float = SETTLE_S
    trial: Trial | None = None
    _stages: dict[str, _StageState] = field(default_factory=dict)
    _last_look: float | None = None

    def start(self, stages: Iterable[StageSnapshot]) -> None:
        for s in stages:
            self._stages[s.name] = _StageState(busy_s=s.busy_s, floor=s.workers)

    def pin(self, knob: str) -> None:
        self.pinned.add(knob)
        if self.trial is not None and f"{self.trial.change.stage}.workers" == knob:
            self.trial = None  # the operator decided: the trial is over, nothing to take back

    def look(self, snap: EngineSnapshot, host: Host, now: float) -> list[Change]:
        """One look at the engine: the changes to make now (already applied through `apply`)."""
        period = self.period_s if self._last_look is None else max(now - self._last_look, 1e-6)
        self._last_look = now
        busy_share = self._busy_shares(snap.stages, period)
        pace = snap.totals.hours_per_hour_now or 0.0
        changes: list[Change] = []
        if self.trial is not None:
            verdict = self._judge(snap, pace, now)
            if verdict is not None:
                changes.append(verdict)
            return self._applied(changes)
        backlog = any(s.queue_depth > 0 for s in snap.stages)
        if backlog:
            grow = self._grow(snap, busy_share, host, pace, now)
            if grow is not None:
                changes.append(grow)
        changes += self._shrink(snap.stages, busy_share, now, backlog)
        return self._applied(changes)

    # --- decisions -----------------------------------------------------------------------------
    def _busy_shares(self, stages: list[StageSnapshot], period: float) -> dict[str, float]:
        shares: dict[str, float] = {}
        for s in stages:
            state = self._stages.setdefault(s.name, _StageState(busy_s=s.busy_s, floor=s.workers))
            # busy_s counts an item when it ends; a worker still on its item is busy all the same.
            done = max(s.busy_s - state.busy_s, 0.0)
            state.busy_s = s.busy_s
            shares[s.name] = max(
                min(done / (period * max(s.workers, 1)), 1.0), s.workers_busy / max(s.workers, 1)
            )
        return shares

    def _grow(
        self, snap: EngineSnapshot, busy: dict[str, float], host: Host, pace: float, now: float
    ) -> Change | None:
        marked = mark_bottleneck(snap.stages)
        neck = next((s for s in marked if s.bottleneck), None)
        if neck is None or f"{neck.name}.workers" in self.pinned:
            return None
        state = self._stages[neck.name]
        if now < state.cool_until or busy[neck.name] < BUSY_ENOUGH:
            return None
        if neck.workers >= self.max_workers(neck.name):
            return None
        uses_gpu = self.on_gpu and neck.name in GPU_STAGES and host.gpu_busy is not None
        if uses_gpu and host.gpu_busy is not None and host.gpu_busy >= GPU_HEADROOM:
            return None
        # A saturated host gains nothing from another thread. Below that, try: a stage's worker often
        # waits on its runtime's own pool or the device rather than using a whole core, and a trial
        # that brings nothing is taken back. (Asking for a free core first kept a 2-core host at one
        # diarize worker while two ran the same files 1.85x faster.)
        if host.cpu_busy >= CPU_HEADROOM:
            return None
        step = max(1, neck.workers // 4)  # +1 at first, +25% once there are many
        target = min(neck.workers + step, self.max_workers(neck.name))
        # Only the model stages take device memory; decode or store workers take none of it.
        over = None
        if neck.name in GPU_STAGES:
            over = workers_over_budget(snap.vram, neck.name, neck.workers, target, neck.batch_size_now)
        if over is not None:
            said, state.held = state.held, over
            if said is not None:  # said once: a hold every period would flood the log
                return None
            held = f"held at {neck.workers} worker{'s' if neck.workers != 1 else ''}: {over}"
            return Change(neck.name, neck.workers, neck.workers, held)
        state.held = None
        where = f"GPU {host.gpu_busy:.0%} busy, " if uses_gpu and host.gpu_busy is not None else ""
        change = Change(
            neck.name,
            neck.workers,
            target,
            f"bottleneck, its workers {busy[neck.name]:.0%} busy; {where}CPU {host.cpu_busy:.0%} busy",
        )
        self.trial = Trial(change, now, pace)
        return change

    def _judge(self, snap: EngineSnapshot, pace: float, now: float) -> Change | None:
        trial = self.trial
        assert trial is not None
        if now - trial.started < self.settle_s:
            return None
        self.trial = None
        change = trial.change
        gain = pace / trial.pace_before if trial.pace_before > 0 else 0.0
        if gain >= MIN_GAIN:  # a verdict with nothing to change: it stays
            return Change(
                change.stage,
                change.workers_to,
                change.workers_to,
                f"kept {change.workers_to} workers (pace x{gain:.2f})",
            )
        self._stages[change.stage].cool_until = now + COOL_DOWN_S
        current = next((s.workers for s in snap.stages if s.name == change.stage), change.workers_to)
        if current != change.workers_to or f"{change.stage}.workers" in self.pinned:
            return None  # changed by someone else meanwhile: theirs stands
        return Change(
            change.stage,
            change.workers_to,
            change.workers_from,
            f"no gain from {change.workers_to} workers (pace x{gain:.2f}); back to {change.workers_from}",
        )

    def _shrink(
        self, stages: list[StageSnapshot], busy: dict[str, float], now: float, backlog: bool
    ) -> list[Change]:
        changes = []
        for s in stages:
            state = self._stages[s.name]
            if busy[s.name] >= IDLE_BELOW or s.workers <= state.floor or f"{s.name}.workers" in self.pinned:
                state.idle_since = None
                continue
            if not backlog:  # no work at all: nothing to learn from idleness
                continue
            if state.idle_since is None:
                state.idle_since = now
            elif now - state.idle_since >= IDLE_S:
                state.idle_since = None
                changes.append(
                    Change(s.name, s.workers, s.workers - 1, f"workers idle {IDLE_S:.0f} s; one given back")
                )
        return changes

    def _applied(self, changes: list[Change]) -> list[Change]:
        for change in changes:
            if change.workers_to != change.workers_from:
                self.apply(change.stage, change.workers_to)
        return changes
