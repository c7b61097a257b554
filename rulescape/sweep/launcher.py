"""The sweep launcher (`hydra/launcher=rulescape`, the default): each job of `train.py -m` in a process of
its own, `hydra.launcher.n_jobs` at a time, so that no job takes the sweep down.

Why not joblib's process pool: a job process that dies (the OOM killer, kill -9) breaks the pool
(TerminatedWorkerError), so its siblings lose their records and later jobs never run; and a signal to the
sweep leaves the pool's workers running. Here:

- each job is a fork of the sweep's process (which has not imported torch), started when a slot is free,
  in a process group of its own, and dies with the sweep (PR_SET_PDEATHSIG): no orphan, even after a
  SIGKILL of the sweep;
- a job that dies without writing its record gets one from the sweep in its directory (`failed`, with the
  signal or exit code and, when it left a checkpoint, the command that resumes it); a finished record is
  never replaced;
- SIGINT or SIGTERM to the sweep: no new job starts, each running job gets one SIGINT (it records
  `interrupted` and saves last.ckpt), the sweep waits for them (a second signal kills them), writes the
  summary table, prints and saves (<sweep dir>/resume.sh) the commands that resume the interrupted jobs and
  run the ones never started, and exits 130;
- Hydra's launcher lines (the job list with its overrides) go to <sweep dir>/launcher.log, not the console;
- the same sweep run again into the same directory (`hydra.sweep.dir=<it>`) skips each job whose record is
  finished (ok or diverged) under the same overrides, resumes each interrupted or killed job from its last.ckpt, and
  runs the rest (`hydra.launcher.skip_finished=false` turns this off; a finished job then refuses its
  directory, as a single run does).

Imports nothing heavy itself. With `preload` (the default) the sweep's process imports the training code
(torch, Lightning, rulescape.run.training) once before its first fork, so that each job starts with it imported (about
8 s less per job here); importing initialises neither CUDA nor torch's thread pools, which is what a fork
must not inherit."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from rulescape.errors import EXIT_CONFIG, EXIT_INTERRUPTED
from modules.record import build_summary, write_unless_finished
from rulescape.run.rundir import read_status

POLL_S = 0.5  # how often the sweep looks at its flags while jobs run
PR_SET_PDEATHSIG = 1


@dataclass(eq=False)  # one job is one object (its config is no key)
class Job:
    num: int
    overrides: list[str]
    out_dir: Path
    config: dict
    cfg: Any = None  # the job's composed config (hydra included)
    process: Any = None
    conn: Any = None
    started_ns: int = 0
    result: Any = None  # the JobReturn the job sent back
    outcome: str | None = None  # the status its return value or record says
    stopped_at: float | None = None  # when the sweep asked it to stop (time.monotonic())


def die_with_parent(parent_pid: int) -> None:
    """Linux: this process gets SIGTERM when the sweep's process dies, however it died."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the sweep's own handler still stops its jobs
        pass
    if os.getppid() != parent_pid:  # the sweep died before prctl took effect
        os._exit(EXIT_INTERRUPTED)


def interrupt_on_sigterm() -> None:
    """SIGTERM becomes KeyboardInterrupt: a job stopped by a scheduler or by the sweep records `interrupted`
    at any moment (Lightning installs its own SIGTERM handler during fit, with the same outcome)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def job_config(hydra_context, config: DictConfig, overrides: Sequence[str], num: int) -> DictConfig:
    """The job's full config (hydra included), as Hydra's own launchers build it."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{num}"
        sweep_config.hydra.job.num = num
    return sweep_config


def plain_config(cfg: DictConfig) -> dict:
    """The job's config without Hydra's node, resolved where it can be (what its record would hold)."""
    config = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            node = cfg[key]
            config[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception:  # noqa: BLE001 - an interpolation only the job can resolve: kept as written
            config[key] = OmegaConf.to_container(cfg, resolve=False).get(key)
    return config


def run_one(conn, parent_pid: int, num: int, overrides, hydra_context, config, task_function, singleton):
    """In the job's process: run the task as Hydra's joblib launcher does, send its JobReturn back."""
    die_with_parent(parent_pid)
    os.setpgrp()  # Ctrl-C in the terminal reaches the sweep only; it forwards one signal to each job
    interrupt_on_sigterm()
    try:
        setup_globals()
        Singleton.set_state(singleton)
        sweep_config = job_config(hydra_context, config, overrides, num)
        HydraConfig.instance().set_config(sweep_config)
        ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    except KeyboardInterrupt:  # stopped outside the task (train.py records its own): the sweep records it
        os._exit(EXIT_INTERRUPTED)
    except OSError as err:  # Hydra's own writes (<job dir>/.hydra, its log): a full disk, an unwritable place
        print(f"error: job {num}: Hydra could not write its files ({err.strerror or err}: "
              f"{err.filename or ''})".replace(": )", ")"), file=sys.stderr, flush=True)
        os._exit(1)  # the sweep writes the job's record where it can (collect)
    try:
        conn.send(ret)
    except Exception:  # noqa: BLE001 - an unpicklable return: the sweep reads the record instead
        conn.send(None)
    sys.stdout.flush()
    sys.stderr.flush()


def resume_command(job: Job) -> str:
    """The command that continues an interrupted job in its directory, or runs a job never started."""
    from rulescape.run.cli import override
    args = [shlex.quote(o) for o in filter_overrides(job.overrides) if not o.startswith(("ckpt_path=", "hydra."))]
    ckpt = job.out_dir / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        args.append(override("ckpt_path", ckpt))
    args.append(override("hydra.run.dir", job.out_dir))  # Hydra-quoted: a non-ASCII or spaced directory
    return "python train.py " + " ".join(args)


def preload_training_code() -> None:
    """Import what every job imports, in the sweep's process, before any fork (see the module's docstring)."""
    import importlib
    importlib.import_module("rulescape.run.training")


FINISHED = ("ok", "diverged")  # a record that is a result: the job is not run again


# keys that never change a computed value: where the logs go, how progress shows, where it resumed from
NOT_IDENTITY = ("logger", "trainer.enable_progress_bar", "ckpt_path")


def record_config(job: Job) -> dict:
    """The config the job's run would record (summary.json's `config`): its composed config through the same
    schema, checks and settling as train(). Raises ConfigError where the job would be refused."""
    from rulescape.config.schema import check_schema
    from rulescape.config.validate import settle, validate
    cfg = OmegaConf.create({k: v for k, v in OmegaConf.to_container(job.cfg, resolve=False).items() if k != "hydra"})
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job.cfg)  # ${hydra:...} as in the job
    try:
        cfg = check_schema(cfg)
        validate(cfg)
        settle(cfg)
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        HydraConfig.instance().cfg = before


def identity_problem(job: Job, record: dict, may_change=NOT_IDENTITY) -> str | None:
    """Why the record in job.out_dir is not this job's run (its own `config` differs from the job's, a key
    only one has included), or None when it is."""
    from rulescape.errors import ConfigError
    from rulescape.run.checkpoint import config_mismatch, flat
    recorded = record.get("config") if isinstance(record, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        return "its record holds no config"
    try:
        want = record_config(job)
    except ConfigError as err:
        return f"this job's config is refused ({err})"
    except Exception as err:  # noqa: BLE001 - a config that cannot be built is not this record's
        return f"this job's config cannot be built ({type(err).__name__}: {err})"
    key = config_mismatch(recorded, want, may_change)
    if key is None:
        return None
    a, b = flat(recorded), flat(want)
    return f"its record has {key}={a.get(key, '<absent>')!r}, this job {key}={b.get(key, '<absent>')!r}"


def read_record(path: Path) -> dict | None:
    import json
    try:
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def locked_by_another(out_dir: Path) -> bool:
    """Whether a live process holds <out_dir>/.lock (rulescape/run/rundir.py); never creates the file."""
    import fcntl
    try:
        handle = open(out_dir / ".lock", "r")
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        handle.close()


def write_job_record(out_dir: Path, summary: dict, started_ns: int) -> bool:
    """A record for a job that could not write its own, only into a directory the sweep creates now or whose
    lock (<run dir>/.lock) it takes: never into one a live run holds. True if written."""
    import fcntl
    if not out_dir.exists():
        return write_unless_finished(out_dir / "summary.json", summary, keep_written_since_ns=started_ns)
    handle = open(out_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another live run's directory
        try:
            return write_unless_finished(out_dir / "summary.json", summary, keep_written_since_ns=started_ns)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


REFUSED_FILE = "refused.json"  # <sweep dir>/refused.json: the jobs of the last launch that were not started


def write_refused(sweep_dir: Path, refused: dict[str, str]) -> None:
    """The refused jobs of this launch for the sweep's table (rulescape/sweep/sweep_summary.py); none: no file."""
    import json
    path = sweep_dir / REFUSED_FILE
    with contextlib.suppress(OSError):
        if refused:
            path.write_text(json.dumps(refused, indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class JobLauncher(Launcher):
    def __init__(self, n_jobs: int = 2, stop_grace_s: float = 300.0, skip_finished: bool = True,
                 preload: bool = True) -> None:
        self.n_jobs = max(int(n_jobs), 1) if int(n_jobs) > 0 else (os.cpu_count() or 1)
        self.stop_grace_s = float(stop_grace_s)  # how long stopped jobs get to save before they are killed
        self.skip_finished = bool(skip_finished)
        self.preload = bool(preload)
        self.config: DictConfig | None = None
        self.task_function = None
        self.hydra_context = None
        self.signals: list[int] = []
        self.log_path: Path | None = None
        self.refused: dict[str, str] = {}  # job directory name -> why it was not started

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    # -- the parent's side ----------------------------------------------------------------------------------

    def plan(self, job_overrides, initial_job_idx: int) -> list[Job]:
        """Each job's number, overrides, directory and config, as its process will compute them."""
        jobs = []
        before = HydraConfig.instance().cfg
        try:
            for i, overrides in enumerate(job_overrides):
                num = initial_job_idx + i
                cfg = job_config(self.hydra_context, self.config, overrides, num)
                HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the subdir and in the config
                out_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                jobs.append(Job(num, list(overrides), out_dir, plain_config(cfg), cfg))
        finally:
            if before is not None:
                HydraConfig.instance().cfg = before
        return jobs

    def take_up(self, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
        """A sweep run again into its directory: (the jobs already finished there, not to run again; the jobs
        refused, whose directory holds another run). A job's identity is its record's own `config`: a
        finished record is this job's result only when that config equals the job's (apart from
        NOT_IDENTITY); an interrupted or killed job with a checkpoint resumes it (`ckpt_path=`) only when its
        record's config equals the job's apart from what a resume may change."""
        from rulescape.run.checkpoint import RESUME_MAY_CHANGE
        finished, refused, resumed = [], [], 0
        for job in jobs:
            summary, ckpt = job.out_dir / "summary.json", job.out_dir / "checkpoints" / "last.ckpt"
            status = read_status(summary)
            if status is None and not ckpt.exists():
                continue  # a directory no run has used
            record = read_record(summary) or {}
            if status in FINISHED:
                why = identity_problem(job, record) if self.skip_finished else "hydra.launcher.skip_finished=false"
                if why is None:
                    job.outcome = status
                    finished.append(job)
                    self.log(f"#{job.num} skipped: its record is finished ({status}) in {job.out_dir}")
                else:
                    self.refuse(job, f"its directory holds a finished run ({status}) that is not this job's: {why}")
                    refused.append(job)
            elif status in ("interrupted", "failed") and ckpt.is_file():  # stopped, or killed mid-run
                why = identity_problem(job, record, RESUME_MAY_CHANGE)
                if why is None:
                    job.overrides = [o for o in job.overrides if not o.startswith("ckpt_path=")] + [f"ckpt_path={ckpt}"]
                    resumed += 1
                    self.log(f"#{job.num} resumes {ckpt}")
                else:
                    self.refuse(job, f"its directory holds another run's checkpoint: {why}")
                    refused.append(job)
            elif ckpt.exists() or status not in ("interrupted", "failed"):
                self.refuse(job, f"its directory holds {'a checkpoint' if ckpt.exists() else 'a record'} "
                                 f"this sweep cannot read as this job's (status {status!r})")
                refused.append(job)
            # interrupted or failed before training (no checkpoint): the job runs again there
        if finished or resumed:
            print(f"{len(finished)} of {len(jobs)} jobs already finished in this directory (skipped, records kept); "
                  f"{resumed} resume from their checkpoint", flush=True)
        return finished, refused

    def refuse(self, job: Job, why: str) -> None:
        """A job that is not started: nothing in its directory is touched; one line, and the sweep's table
        lists it as refused."""
        job.outcome = "refused"
        self.refused[job.out_dir.name] = why
        self.log(f"#{job.num} refused: {why}")
        sys.stdout.write(f"[refused] job {job.num} ({' '.join(filter_overrides(job.overrides))}): {why}; "
                         f"nothing in {job.out_dir} was changed (choose another hydra.sweep.dir)\n")
        sys.stdout.flush()

    def on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def start(self, job: Job) -> None:
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        job.started_ns = time.time_ns()
        job.process = ctx.Process(target=run_one, name=f"job{job.num}", daemon=False,
                                  args=(send, os.getpid(), job.num, job.overrides, self.hydra_context,
                                        self.config, self.task_function, Singleton.get_state()))
        job.process.start()
        send.close()
        job.conn = receive
        self.log(f"#{job.num} started: pid {job.process.pid}")

    def receive(self, job: Job) -> None:
        """The job's JobReturn from its pipe (or the pipe's end: it died, or sent nothing)."""
        try:
            job.result = job.conn.recv()
        except (EOFError, OSError):
            pass
        job.conn.close()

    def collect(self, job: Job) -> None:
        """After the job's process ended: its JobReturn, or a record written for it."""
        if not job.conn.closed:
            with contextlib.suppress(EOFError, OSError):
                if job.conn.poll():
                    job.result = job.conn.recv()
            job.conn.close()
        job.process.join()
        code = job.process.exitcode
        ret = job.result
        self.log(f"#{job.num} ended: {describe_exit(code)}")
        if isinstance(ret, JobReturn) and ret.status == JobStatus.COMPLETED:
            job.outcome = str(ret._return_value)
            return
        if isinstance(ret, JobReturn) and ret.status == JobStatus.FAILED:
            reason = f"{type(ret._return_value).__name__}: {ret._return_value}"
        else:
            reason = f"the job's process died ({describe_exit(code)})"
        status = "interrupted" if job.stopped_at is not None else "failed"
        ckpt = job.out_dir / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            reason += f"; its last checkpoint resumes with: {resume_command(job)}"
        try:  # what the job's own record would hold, so that the sweep run again can resume it
            config = record_config(job)
        except Exception:  # noqa: BLE001 - a job refused before training: its config as composed
            config = job.config
        summary = build_summary(status, config, {}, 0, (time.time_ns() - job.started_ns) / 1e9, error=reason)
        try:
            written = write_job_record(job.out_dir, summary, job.started_ns)
        except OSError as err:
            written = False
            reason += f" (its record could not be written: {err})"
        if not written:  # the job wrote its own record before it died (or an earlier run's is there)
            job.outcome = read_status(job.out_dir / "summary.json") or status
        else:
            job.outcome = status
            sys.stdout.write(f"[{status}] job {job.num} ({' '.join(filter_overrides(job.overrides))}): {reason} "
                             f"record={job.out_dir / 'summary.json'}\n")
            sys.stdout.flush()

    def job_return(self, job: Job) -> JobReturn:
        ret = job.result if isinstance(job.result, JobReturn) else JobReturn(overrides=job.overrides)
        ret.overrides = job.overrides
        ret.working_dir = ret.working_dir or os.getcwd()
        ret.status, ret.return_value = JobStatus.COMPLETED, job.outcome  # a job never takes the sweep down
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        jobs = self.plan(job_overrides, initial_job_idx)
        from rulescape.config.gate import config_problem
        from rulescape.run.cli import path_too_long
        for job in jobs:  # the gate again, on the configs the jobs will run: before any directory is made
            where = f"sweep job {job.num} ({' '.join(filter_overrides(job.overrides))})"
            problem = config_problem(job.cfg, where) or path_too_long(f"{where}: its directory", job.out_dir)
            if problem:
                print(problem, file=sys.stderr, flush=True)
                sys.exit(EXIT_CONFIG)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.log_plan(sweep_dir, jobs)
        self.refused = {}
        skipped, refused = self.take_up(jobs)
        if self.preload and len(skipped) + len(refused) < len(jobs):
            preload_training_code()
        pending, running, done = [j for j in jobs if j not in skipped and j not in refused], [], skipped + refused
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or running:
                if self.signals:
                    self.stop(running)
                while pending and len(running) < self.n_jobs and not self.signals:
                    job = pending.pop(0)
                    if locked_by_another(job.out_dir):  # a live run holds it: its directory is not ours
                        self.refuse(job, "its directory is in use by another live run")
                        done.append(job)
                        continue
                    self.start(job)
                    running.append(job)
                # the result pipes too: a large JobReturn is read while its job writes it (no full-pipe stall)
                listening = [j.conn for j in running if not j.conn.closed]
                ready = multiprocessing.connection.wait([j.process.sentinel for j in running] + listening,
                                                        timeout=POLL_S)
                for job in [j for j in running if not j.conn.closed and j.conn in ready]:
                    self.receive(job)
                for job in [j for j in running if j.process.sentinel in ready]:
                    self.collect(job)
                    running.remove(job)
                    done.append(job)
                if self.signals and not running:
                    break
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        write_refused(sweep_dir, self.refused)
        if self.signals:
            self.finish_interrupted(sweep_dir, done, pending)
        return [self.job_return(j) for j in sorted(done, key=lambda j: j.num)]

    def stop(self, running: list[Job]) -> None:
        """First signal: one SIGINT to each running job. A second signal, or the grace time over: SIGKILL."""
        now = time.monotonic()
        for job in running:
            if job.stopped_at is None:
                job.stopped_at = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.process.pid, signal.SIGINT)
            elif len(self.signals) > 1 or now - job.stopped_at > self.stop_grace_s:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.process.pid, signal.SIGKILL)

    def finish_interrupted(self, sweep_dir: Path, done: list[Job], pending: list[Job]) -> None:
        """The sweep was stopped: its table, how to resume, exit 130."""
        from rulescape.sweep.sweep_summary import summary_table
        table = summary_table(sweep_dir)
        (sweep_dir / "sweep_summary.txt").write_text(table + "\n")
        resume = [j for j in done if j.outcome in ("interrupted", "failed") and j.stopped_at is not None] + pending
        lines = [resume_command(j) for j in sorted(resume, key=lambda j: j.num)]
        script = sweep_dir / "resume.sh"
        script.write_text("#!/bin/sh\n# the jobs of this sweep that were stopped or never started\n"
                          + "".join(f"{line}\n" for line in lines))
        print(f"\n{table}", flush=True)
        print(f"sweep interrupted: {len(resume)} job(s) to resume or run (sh {script}):", flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        sys.exit(EXIT_INTERRUPTED)

    def log(self, line: str) -> None:
        """A line in <sweep dir>/launcher.log (what Hydra's launchers print on the console)."""
        with contextlib.suppress(OSError), open(self.log_path, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def log_plan(self, sweep_dir: Path, jobs: list[Job]) -> None:
        """The job list into launcher.log; one line on the console."""
        self.log_path = sweep_dir / "launcher.log"
        self.log(f"launching {len(jobs)} jobs, {self.n_jobs} at a time, into {sweep_dir}")
        for job in jobs:
            self.log(f"#{job.num}: {' '.join(filter_overrides(job.overrides))} -> {job.out_dir}")
        print(f"sweep {sweep_dir}: {len(jobs)} jobs, {self.n_jobs} at a time (job list in launcher.log)", flush=True)


logging.getLogger(__name__).addHandler(logging.NullHandler())
