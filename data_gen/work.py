"""One chunk of images, start to finish: the unit of work of the single-process run
(`run.make_dataset`) and of each Ray actor (`cluster`), so that both make the same images.

A work item is one attempt at one image: its index, its EG3D camera label and angles (from
`(seed, index)`, data_gen.guidance), and the seed `image_seed(seed, index, attempt)` that
draws its prompt and its initial noise. When the view filter rejects an attempt, the image
is tried again with the next attempt's item, up to max_attempts.

Chunks are fixed blocks of `batch` indices (`chunks_left`), not blocks of what is left to
do, and a chunk is always generated whole, one pipeline call per attempt, even when some of
its images exist: each image comes out of the same batch as in an uninterrupted run, so a
resumed, retried or distributed run gives the same bytes as a single uninterrupted run with
the same --batch (batched kernels may round differently in another batch). What a replay
repeats it does not redo on disk: an image already written is not written again, a rejection
already recorded is not recorded again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from data_gen import prompts
from data_gen.config import Job
from data_gen.guidance import render_guidance
from data_gen.output import Done, claim, done, finish, read_rejections, record_rejection
from data_gen.pipelines import generate, load_pipeline
from data_gen.view_filter import ClipViewScorer, Scorer, judge
from styleavatar_jax import cameras
from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.data.source import encode_rgb
from styleavatar_jax.files import as_path, write_atomic
from styleavatar_jax.heads.make_mannequin import view_angles, view_labels


def image_seed(seed: int, index: int, attempt: int) -> int:
    """The torch (and prompt) seed of attempt `attempt` at image `index` -> int in [0, 2³²)."""
    return int(np.random.SeedSequence([seed, index, attempt]).generate_state(1)[0])


def image_prompt(job: Job, yaw: float, pitch: float, seed: int) -> prompts.Prompt:
    return prompts.build_prompt(job.prompt_data, yaw, pitch, np.random.default_rng(seed))


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One attempt at one image (plain values: it travels in a Ray Data row as a dict)."""

    index: int
    attempt: int
    seed: int  # image_seed(cfg seed, index, attempt): prompt and initial noise
    label: tuple[float, ...]  # EG3D camera label, 25 float32 values
    yaw: float  # degrees, a float32 value (the label's angle)
    pitch: float  # degrees, a float32 value
    prompt: str
    negative_prompt: str
    style: str
    prompt_view: str  # prompts.PROMPT_VIEWS name: the view the prompt describes

    @classmethod
    def from_dict(cls, row: dict) -> WorkItem:
        """`dataclasses.asdict` output, also after a trip through Arrow (label as an array)."""
        return cls(**{**row, "label": tuple(float(x) for x in row["label"])})


def plan_items(job: Job, indices: Sequence[int], attempt: int = 0) -> list[WorkItem]:
    """Images `indices` [N] at attempt `attempt` -> their work items [N] (no rendering)."""
    cams = job.cfg.cameras.mannequin(job.cfg.guidance, int(max(indices)) + 1)
    yaw, pitch = view_angles(cams, indices)  # float32 [N], degrees
    labels = view_labels(cams, yaw, pitch)  # float32 [N, 25]
    items = []
    for i, y, p, label in zip(indices, yaw, pitch, labels, strict=True):
        seed = image_seed(job.cfg.cameras.seed, int(i), attempt)
        prompt = image_prompt(job, float(y), float(p), seed)
        items.append(WorkItem(
            index=int(i), attempt=attempt, seed=seed, label=tuple(label.tolist()), yaw=float(y),
            pitch=float(p), prompt=prompt.positive, negative_prompt=prompt.negative,
            style=prompt.style, prompt_view=prompt.view,
        ))  # fmt: skip
    return items


def chunks_left(num_images: int, batch: int, done: Iterable[int]) -> list[list[int]]:
    """The chunks [i·batch, (i+1)·batch) ∩ [0, num_images) holding an index not in `done`."""
    done = set(done)
    blocks = (range(s, min(s + batch, num_images)) for s in range(0, num_images, batch))
    return [list(block) for block in blocks if not done.issuperset(block)]


def plan_run(job: Job, out: Path, num_images: int, batch: int, dtype: str
             ) -> tuple[list[list[int]], Done]:  # fmt: skip
    """Claim `out` for the job (output.claim) -> (the chunks left to make, what `out` holds
    before). Every check before any model loads."""
    if num_images < 1 or batch < 1:
        raise ValueError(f"--num-images {num_images}, --batch {batch}: expected >= 1")
    claim(out, job.settings_json(dtype))
    before = done(out, job.cfg.max_attempts)
    return chunks_left(num_images, batch, before.finished), before


def conclude(out: Path, num_images: int, before: Done) -> Summary:
    """Finish the set (output.finish) -> the run's Summary, counted on disk against `before`
    (an actor that died after writing an image reported nothing, yet the image counts)."""
    manifest = finish(out, num_images)
    return Summary(generated=manifest["written"] - len(before.written),
                   rejected=manifest["rejected_attempts"] - before.rejections,
                   skipped=len(before.finished & set(range(num_images))),
                   gaps=manifest["gaps"])  # fmt: skip


def progress_bar(total: int, done: int, enabled: bool):
    """A tqdm bar over `total` images, `done` of them already."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="img", disable=not enabled, desc="data_gen",
                dynamic_ncols=True)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Summary:
    """What making a chunk, or a whole run, did."""

    generated: int = 0  # images written
    rejected: int = 0  # attempts rejected (and recorded)
    given_up: int = 0  # images rejected max_attempts times (chunks)
    skipped: int = 0  # images finished before (runs)
    gaps: list[int] = dataclasses.field(default_factory=list)  # indices left out (runs)


class ChunkMaker:
    """Makes chunks of work items into `out` with one loaded pipeline: renders their guidance,
    generates, filters, writes. Built once per process (per Ray actor): `load`."""

    def __init__(self, job: Job, out: Path, pipe, scorer: Scorer | None, batch: int,
                 before_write: Callable[[int], None] | None = None):  # fmt: skip
        """pipe: a loaded pipeline (pipelines.load_pipeline); scorer: the view filter or None;
        batch: the chunk size (guidance renders in batches of this size: one compile);
        before_write: called with an image's index before it is written (a test hook)."""
        self.job, self.out, self.pipe, self.scorer = job, as_path(out), pipe, scorer
        self.batch, self.before_write = batch, before_write
        self.writer = EG3DWriter(out)
        self.recorded = frozenset(read_rejections(self.out))

    @classmethod
    def load(cls, job: Job, out: Path, device: str, dtype: str, batch: int, *, pipe=None,
             scorer: Scorer | None = None, before_write=None) -> ChunkMaker:  # fmt: skip
        """Load the job's pipeline (unless `pipe`) and, when it filters, its CLIP scorer
        (unless `scorer`) on `device` -> ChunkMaker."""
        pipe = pipe or load_pipeline(job.base, job.controlnets, scheduler=job.cfg.scheduler,
                                     device=device, dtype=dtype, loras=job.loras,
                                     lora_scale=job.cfg.lora_scale)  # fmt: skip
        if job.filtering and scorer is None:
            scorer = ClipViewScorer(job.clip, job.prompt_data.clip_prompts, device)
        return cls(job, out, pipe, scorer if job.filtering else None, batch, before_write)

    def __call__(self, items: Sequence[WorkItem]) -> Summary:
        """Make one chunk: items [B <= batch], the first attempt of each image -> Summary."""
        cfg = self.job.cfg
        index = np.array([it.index for it in items])
        # Fixed-size batches (the last padded): the mannequin renderer compiles once.
        padded = np.concatenate([index, np.full(self.batch - len(index), index[-1])])
        views = render_guidance(cfg.cameras, cfg.guidance, padded, self.job.head)
        counts = Counter()
        todo = dict(enumerate(items))  # chunk position -> the image's current attempt
        while todo:
            todo = self._attempt(todo, views, counts)
        return Summary(**counts)

    def _attempt(self, todo: dict[int, WorkItem], views: dict[str, np.ndarray],
                 counts: Counter) -> dict[int, WorkItem]:  # fmt: skip
        """Generate the images `todo` in one pipeline call; write those kept, record those
        rejected (counting both in `counts`) -> their next attempts (those with any left)."""
        cfg = self.job.cfg
        pos, items = list(todo), list(todo.values())
        images = generate(self.pipe, [it.prompt for it in items],
                          [it.negative_prompt for it in items],
                          {k: views[k][pos] for k in cfg.guidance}, [it.seed for it in items],
                          steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                          controlnet_scale=cfg.scales)  # fmt: skip
        probs = self.scorer(images) if self.scorer is not None else None
        reasons = (judge(probs, [it.prompt_view for it in items], rule=cfg.filter_rule,
                         margin=cfg.filter_margin)
                   if probs is not None else [None] * len(items))  # fmt: skip
        again = {}
        for k, (j, it) in enumerate(todo.items()):
            if reasons[k] is None:
                guidance = {kind: views[kind][j] for kind in cfg.guidance}
                counts["generated"] += self._write(
                    it, images[k], guidance, int(views["identity"][j])
                )
                continue
            record = dict(
                index=it.index, attempt=it.attempt, seed=it.seed, camera_view=it.prompt_view,
                yaw=it.yaw, pitch=it.pitch,
                clip_probs=dict(zip(prompts.PROMPT_VIEWS, np.round(probs[k], 4).tolist(),
                                    strict=True)),
                reason=reasons[k], prompt=it.prompt,
            )  # fmt: skip
            new = record_rejection(self.out, record, self.recorded)
            counts["rejected"] += new
            if it.attempt + 1 < cfg.max_attempts:
                again[j] = plan_items(self.job, [it.index], it.attempt + 1)[0]
            else:
                counts["given_up"] += new
        return again

    def _write(self, it: WorkItem, image: np.ndarray, guidance: dict[str, np.ndarray],
               identity: int) -> bool:  # fmt: skip
        """Write image uint8 [H, W, 3] after its guidance images, unless it exists -> written?"""
        if self.writer.done(it.index):
            return False
        if self.before_write is not None:
            self.before_write(it.index)
        name = Path(self.writer.name(it.index)).with_suffix(".png")
        for kind, g in guidance.items():
            data = encode_rgb(g, "PNG")
            write_atomic(self.out / "guidance" / kind / name, lambda f, data=data: f.write(data))
        # view_group of the float32 angle, as the label's
        group = str(cameras.view_group(np.radians(np.float32(it.yaw))))
        meta = dict(identity=identity, seed=it.seed, yaw=it.yaw, pitch=it.pitch,
                    prompt=it.prompt, negative_prompt=it.negative_prompt, style=it.style,
                    view=group)  # fmt: skip
        self.writer.write(it.index, image, np.asarray(it.label, np.float32), meta)
        return True
