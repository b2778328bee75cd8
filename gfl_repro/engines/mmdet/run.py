"""Train and evaluate one run with mmdetection 3.3 itself (``gfl-repro run --engine mmdet``).

The run's mmdet config comes from :func:`gfl_repro.engines.mmdet.config.build_config` (mmdet's stock
config, edited with the run's settings); mmengine's ``Runner`` trains it in
``<run dir>/mmdet/``, checkpointing every epoch and resuming from the last one. Evaluation
then runs mmdet's test pipeline and model, and scores the detections with the same
COCOeval call as the native engine, so both engines' numbers are computed alike. The run
directory gets the same files as a native run (``config.json``, ``env.json``,
``metrics.jsonl``, ``result.json`` with ``"engine": "mmdet"``).

Every checkpoint mmengine reads (the run's resume files, the ImageNet weights) is loaded with
``weights_only=True`` and the allow-list of :mod:`gfl_repro.engines.mmdet.safe_load`: a file
naming any other type is refused in one line and nothing in it runs.

Differences from the native engine's contract, both mmengine's: a stop request (Slurm
preemption) resumes from the last *epoch* checkpoint, and a non-finite loss is reported
after the optimizer step of that iteration, not before.
"""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ... import distributed
from ...datasets.coco import load_coco
from ...specs.profiles import PROFILES
from ...specs.run_config import RunConfig
from ...store import append_metrics, atomic_write_text, write_config, write_env, write_result
from ..metrics import (IterWindow, end_record, epoch_record, error_record, should_log, start_record,
                       step_info)
from ..errors import NonFiniteLoss
from ..environment import (SPEED_IMAGES, check_data, default_workers, device_name, environment, evaluated_on,
                           locate_data, pretrained_weights)
from ..evaluation import coco_evaluate, detections_to_coco, time_per_call
from .config import STOCK_CONFIGS, build_config, register_tiny_backbones, stock_name
from .safe_load import UnsafeCheckpoint, refusal, weights_only_loading

ENGINE = "mmdet"
WORK_SUBDIR = "mmdet"


class _Stopped(Exception):
    """Raised from the hook when the launcher asks the run to stop (preemption)."""


def category_names(annotation_file: Path) -> list[str]:
    """Category names in the annotation file's order (mmdet's label order for ``classes``)."""
    return [c["name"] for c in load_coco(annotation_file).dataset["categories"]]


def _store_hook(run_dir: Path, should_stop: Callable[[], bool] | None, progress: bool, main: bool):
    """An mmengine hook that appends the ``metrics.jsonl`` records of
    :mod:`gfl_repro.engines.metrics` (read by ``status``: progress and ETA), shows a progress
    bar (both on the main process only), and turns a stop request or a non-finite loss into an
    exception (on every process, so all of them stop)."""

    def append(record: dict | None) -> None:
        if main and record is not None:
            append_metrics(run_dir, record)

    from mmengine.hooks import Hook
    from tqdm.auto import tqdm

    class StoreMetricsHook(Hook):
        priority = "LOW"

        def before_train(self, runner) -> None:
            self.bar = tqdm(initial=runner.iter, total=runner.max_epochs * len(runner.train_dataloader),
                            disable=not (progress and main), dynamic_ncols=True, unit="it")
            self.window = IterWindow()
            self.epoch_sums: dict[str, float] = {}
            self.epoch_count, self.epoch_seconds = 0, 0.0
            iters = len(runner.train_dataloader)
            append(start_record(runner.iter > 0, epoch=runner.epoch, iter_in_epoch=runner.iter - runner.epoch * iters,
                                        iteration=runner.iter, epochs=runner.max_epochs, engine=ENGINE))

        def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
            self.lr = runner.optim_wrapper.get_lr()["lr"][0]  # the lr this iteration trains with
            self.tick = time.perf_counter()

        def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            seconds = time.perf_counter() - self.tick
            parts = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in (outputs or {}).items()}
            iters = len(runner.train_dataloader)
            info = step_info(epoch=runner.epoch, iter_in_epoch=batch_idx, iteration=runner.iter, lr=self.lr,
                                     epochs=runner.max_epochs, epoch_iters=iters)
            if not all(math.isfinite(v) for v in parts.values()):
                error = NonFiniteLoss(runner.iter, runner.epoch, batch_idx, parts,
                                      kept="mmengine's last epoch checkpoint is kept")
                append(error_record("NonFiniteLoss", str(error), epoch=runner.epoch, iter=batch_idx,
                                            iteration=runner.iter))
                raise error
            self.window.add({**parts, "time": seconds})
            self.epoch_count += 1
            self.epoch_seconds += seconds
            for key, value in parts.items():
                self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
            if should_log(runner.iter, batch_idx == iters - 1):
                append(self.window.flush(info))
            self.bar.set_description(f"epoch {runner.epoch + 1}/{runner.max_epochs}", refresh=False)
            self.bar.set_postfix_str(" ".join(f"{k}={v:.4g}" for k, v in parts.items()) + f" lr={self.lr:.3g}",
                                     refresh=False)
            self.bar.update(1)
            if should_stop is not None and should_stop():
                self.bar.close()
                raise _Stopped()

        def after_train_epoch(self, runner) -> None:
            append(epoch_record(epoch=runner.epoch - 1, iteration=runner.iter - 1, iters=self.epoch_count,
                                        lr=self.lr, sums=self.epoch_sums, seconds=self.epoch_seconds))
            self.epoch_sums, self.epoch_count, self.epoch_seconds = {}, 0, 0.0

        def after_train(self, runner) -> None:
            self.bar.close()
            append(end_record(epochs=runner.max_epochs, iteration=runner.iter - 1))

    return StoreMetricsHook()


def _detections(samples) -> tuple[list[int], list[dict]]:
    ids, dets = [], []
    for sample in samples:
        pred = sample.pred_instances
        ids.append(int(sample.metainfo["img_id"]))
        dets.append({"boxes": pred.bboxes, "scores": pred.scores, "labels": pred.labels})
    return ids, dets


def evaluate_mmdet(model, loader, annotation_file: Path, progress: bool = True) -> list[float]:
    """COCOeval's 12 bbox stats of ``model`` (an mmdet detector) over ``loader`` (mmdet's test
    dataloader); detections are mapped to COCO categories with the dataset's ``cat_ids``."""
    from tqdm.auto import tqdm

    label_to_cat = list(loader.dataset.cat_ids)
    model.eval()
    image_ids, results = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", disable=not progress, dynamic_ncols=True):
            ids, dets = _detections(model.test_step(batch))
            image_ids.extend(ids)
            results.extend(detections_to_coco(ids, dets, label_to_cat))
    return coco_evaluate(load_coco(annotation_file), results, image_ids)


def measure_speed_mmdet(model, loader, images: int = SPEED_IMAGES, warmup: int = 5) -> dict[str, float]:
    """Batch-1 inference time of ``model.test_step`` (preprocessing on device, network and
    post-processing), as :func:`gfl_repro.engines.evaluation.measure_speed` times the native model."""
    batches = [b for _, b in zip(range(images), loader)]
    if not batches:
        raise ValueError("measure_speed_mmdet needs at least one batch")
    model.eval()
    ms = 1000.0 * time_per_call(model.test_step, batches, next(model.parameters()).device, warmup)
    return {"ms_per_img": ms, "fps": 1000.0 / ms}


def execute_mmdet(
    config: RunConfig,
    run_dir: Path,
    *,
    run_id: str,
    profile: str,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    num_workers: int | None = None,
) -> dict | None:
    """Train (resuming from ``<run_dir>/mmdet/``'s last epoch checkpoint) and evaluate one run
    with mmdet; returns the result dict, or None when ``should_stop`` interrupted training.

    mmengine chooses the device (CUDA when available). Under a multi-process launch the
    process group set up from submitit's environment is used (mmengine launcher "pytorch").
    """
    import mmdet
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules(init_default_scope=False)
    register_tiny_backbones()
    name = stock_name(config)
    run_dir = Path(run_dir)
    distributed.init_from_submitit()
    world = distributed.world_size()
    data = locate_data(config, data_root, cache_dir, progress)
    check_data(data)
    weights = pretrained_weights(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = build_config(
        config, classes=category_names(data.train_annotations), train_images=data.train_images,
        train_annotations=data.train_annotations, val_images=data.val_images, val_annotations=data.val_annotations,
        work_dir=run_dir / WORK_SUBDIR, pretrained=weights, world_size=world,
        num_workers=default_workers(device, num_workers),
    )
    cfg.log_level = "WARNING"  # mmengine's INFO dumps the environment and config; the bar shows progress
    main = distributed.rank() == 0
    if main:
        write_config(run_dir, config, run_id, profile)
        write_env(run_dir, {**environment(device), "mmdet": mmdet.__version__, "stock_config": STOCK_CONFIGS[name]})
        atomic_write_text(run_dir / "mmdet_config.py", cfg.pretty_text)

    runner = Runner.from_cfg(cfg)
    runner.register_hook(_store_hook(run_dir, should_stop, progress, main))
    try:
        with weights_only_loading():  # resume checkpoints and ImageNet weights: nothing in them runs
            runner.train()
    except _Stopped:
        return None
    except pickle.UnpicklingError as err:
        line = refusal(f"a checkpoint of the run (resume files in {run_dir / WORK_SUBDIR}, ImageNet weights)", err)
        if line is None:
            raise
        raise UnsafeCheckpoint(line) from None
    if not main:
        return None

    model = getattr(runner.model, "module", runner.model)
    if not hasattr(model.bbox_head, "loss_cls"):
        # mmdet 3.3's SSDHead never sets loss_cls, which its shared predict path reads
        # (open-mmlab/mmdetection#11780, fix #11524 unmerged); None reads as "no custom channels"
        model.bbox_head.loss_cls = None
    loader = Runner.build_dataloader(cfg.eval_dataloader)
    stats = evaluate_mmdet(model, loader, data.val_annotations, progress=progress)
    speed = measure_speed_mmdet(model, loader)

    return write_result(
        run_dir, run_id=run_id, profile=profile, engine=ENGINE, toy_scale=PROFILES[profile].toy_scale,
        split=config.eval_split, stats=stats, ms_per_img=speed["ms_per_img"], fps=speed["fps"],
        device=device_name(device), extra={"stock_config": STOCK_CONFIGS[name], "mmdet": mmdet.__version__,
                                           "evaluated_on": evaluated_on(config)},
    )


__all__ = ["ENGINE", "category_names", "evaluate_mmdet", "execute_mmdet", "measure_speed_mmdet"]
