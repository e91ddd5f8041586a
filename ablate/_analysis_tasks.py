"""Analyses as Ray tasks (part of the runner: only the runner's modules touch Ray).

One task per (trial, analysis), with the study's per-trial resources; each returns its scalars or
its readable error, and the driver, as the single writer, stores them (``ablate.analyses.driver``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ablate.runner import RunInterrupted, check_resources, init_ray


def _analysis_task(job: dict[str, Any], artifacts: str | None, threads: float) -> dict[str, Any]:
    """Runs in a Ray worker: {"scalars": ...} or {"error": text} (never raises for the job's own error)."""
    import torch

    from ablate._watchdog import watch_driver
    from ablate.analyses.worker import run_analysis
    from ablate.trial_state import readable_error

    watch_driver()  # an orphan (driver killed) stops within seconds
    torch.set_num_threads(max(1, int(threads)))
    try:
        return {"scalars": run_analysis(job["name"], job["options"], job["study"], job["trial_id"], job["config"],
                                        artifacts=artifacts)}
    except Exception as e:  # noqa: BLE001 - the trial's problem, reported to the driver as text
        return {"error": readable_error(e)}


def run_analysis_tasks(jobs: Iterable[dict[str, Any]], on_done: Callable[[dict[str, Any], dict[str, Any]], None], *,
                       cpus: float = 1, gpus: float = 0, address: str | None = None,
                       artifacts: str | None = None) -> None:
    """Run every job (dicts with name, options, study, trial_id, config) as a Ray task with
    ``cpus``/``gpus``; ``on_done(job, {"scalars": ...} | {"error": ...})`` is called on the driver
    as each finishes. Ctrl-C cancels the tasks left and raises RunInterrupted."""
    jobs = list(jobs)
    if not jobs:
        return
    import ray

    started = init_ray(address)
    try:
        check_resources(cpus, gpus)
        task = ray.remote(_analysis_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        pending = {task.remote(job, artifacts, cpus): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker or its node died
                        out = {"error": f"the analysis task was lost: {str(e).splitlines()[0][:300]}"}
                    on_done(job, out)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise RunInterrupted(len(pending)) from None
    finally:
        if started:
            ray.shutdown()
