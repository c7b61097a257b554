"""One-line mutations of the source for tools/mutate.py: each breaks one promise of README (or of the
numerical core) and must make the listed test files fail. Keep `old` exact and unique in `file`; when
the source changes and a snippet goes STALE, refresh `old`/`new` (or retire the entry) here.

Fields: name (unique), file, old (occurs exactly once), new, why (the broken promise), tests (fast-suite
test files, or file::test ids, expected to catch it)."""

P = "tests/test_promises.py"


def mutation(name, file, old, new, why, *tests):
    return {"name": name, "file": file, "old": old, "new": new, "why": why, "tests": list(tests)}


MUTATIONS = [
    # --- statuses, exit codes, run record -------------------------------------------------------------
    mutation("exit_interrupted_1", "rulescape/errors.py", "EXIT_INTERRUPTED = 130", "EXIT_INTERRUPTED = 1",
             "interrupted exits 1 instead of 130", P),
    mutation("exit_diverged_1", "rulescape/errors.py", "EXIT_DIVERGED = 3 ", "EXIT_DIVERGED = 1 ",
             "diverged exits 1 instead of 3", P, "tests/test_reliability.py"),
    mutation("status_exit_interrupted", "rulescape/run.py", '"interrupted": EXIT_INTERRUPTED',
             '"interrupted": EXIT_FAILED', "STATUS_EXIT maps interrupted to the failure code", P),
    mutation("unexpected_error_ok", "callbacks/run_record.py",
             'self.write(trainer, pl_module, "failed", error=f"{type(exception).__name__}: {exception}")',
             'self.write(trainer, pl_module, "ok", error=f"{type(exception).__name__}: {exception}")',
             "an unexpected runtime error is recorded as ok", P),
    mutation("interrupt_recorded_failed", "callbacks/run_record.py",
             'self.write(trainer, pl_module, "interrupted", error=type(exception).__name__)',
             'self.write(trainer, pl_module, "failed", error=type(exception).__name__)',
             "SIGTERM/Ctrl-C recorded as failed", "tests/test_reliability.py::test_interrupt_then_resume_equals_uninterrupted"),
    mutation("rho_mean_bptt_none", "callbacks/run_record.py", "(1.0 if exact_rule else None)", "(None)",
             "rho_mean is not 1.0 for bptt without alignment", P),
    mutation("gap_acc_from_loss", "callbacks/run_record.py", '"gap_acc": "gap/acc"', '"gap_acc": "gap/loss"',
             "summary gap_acc is not train_acc - test_acc", P),
    mutation("sweep_stops_on_bad_job", "train.py",
             'if multirun:  # a bad job must not stop the sweep; its summary.json says "failed"\n            return "failed"',
             'if multirun:  # a bad job must not stop the sweep; its summary.json says "failed"\n            sys.exit(EXIT_CONFIG)',
             "a job with a bad config ends the whole sweep",
             P + "::test_sweep_job_with_a_bad_config_is_recorded_and_the_others_run"),
    # --- loggers ----------------------------------------------------------------------------------------
    mutation("wandb_always_online", "rulescape/loggers.py",
             'return "online" if wandb_logged_in() else "offline"', 'return "online"',
             "wandb goes online without credentials", P),
    mutation("wandb_key_ignored", "rulescape/loggers.py", 'if os.environ.get("WANDB_API_KEY"):',
             'if os.environ.get("WANDB_API_KEY_UNUSED"):', "WANDB_API_KEY does not count as logged in", P),
    mutation("wandb_not_closed", "rulescape/loggers.py", "    if wandb.run is not None:\n        wandb.finish()",
             "    if wandb.run is not None:\n        pass", "a failed run leaves its wandb run open", P),
    mutation("csv_logger_dropped", "rulescape/loggers.py",
             'return [CSVLogger(save_dir=str(out_dir), name="", version="")]', "return []",
             "logger=csv writes no metrics.csv", P),
    # --- model: Dale's law, cell types, float64 --------------------------------------------------------
    mutation("dale_half_excitatory", "modules/rnn.py", "n_exc = int(round(0.8 * hidden_size))",
             "n_exc = int(round(0.5 * hidden_size))", "Dale's law / cell types: 50% excitatory instead of 80%", P),
    mutation("dale_no_inhibitory_sign", "modules/rnn.py", "sign[self.types == n_cell_types - 1] = -1.0",
             "sign[self.types == n_cell_types - 1] = 1.0", "Dale's law: inhibitory units excite", P),
    mutation("float64_ignored", "rulescape/run.py", "return net.double() if cfg.float64 else net", "return net",
             "float64=true trains in float32", P, "tests/test_foundation.py::test_float64_runs_train_in_double"),
    # --- rules ---------------------------------------------------------------------------------------
    mutation("rflo_ignores_feedback_scale", "modules/rules/rflo.py", "(feedback_scale / math.sqrt(n))",
             "(0.3 / math.sqrt(n))", "RFLO ignores rule.feedback_scale", P),
    mutation("eprop_no_truncation", "modules/rnn.py",
             'r_in = r.detach() if truncation == "recurrent" else r', "r_in = r",
             "e-prop's stop-gradient on r_{t-1} dropped (it becomes BPTT)", "tests/test_rules.py"),
    mutation("tbptt_window_off_by_one", "modules/rnn.py", "t > 0 and t % window == 0",
             "t > 0 and t % (window + 1) == 0", "tBPTT detaches every window+1 steps", "tests/test_rules.py"),
    mutation("mdgl_counts_autapses", "modules/rules/mdgl.py", "block_cnt = onehot.T @ mask @ onehot",
             "block_cnt = onehot.T @ torch.ones_like(mask) @ onehot",
             "MDGL's type averages count the missing autapses", "tests/test_rules.py"),
    mutation("bptt_scaled_unscaled_readout", "modules/rules/bptt_scaled.py",
             "y_hat = net.readout(ScaleGrad.apply(r, self.rho))", "y_hat = net.readout(r)",
             "bptt_scaled's W_h/W_x/b update is not times rho", "tests/test_rules.py"),
    mutation("objective_l2_double", "modules/objective.py", "return 0.5 * self.l2 * sum(", "return self.l2 * sum(",
             "the L2 term is l2 |w|^2 instead of l2/2 |w|^2", P),
    # --- measurements --------------------------------------------------------------------------------
    mutation("alignment_rho_normalised_wrong", "callbacks/alignment.py", "rho = torch.dot(g_hat, g) / gg",
             "rho = torch.dot(g_hat, g) / gg.sqrt()", "rho is not g_hat.g / g.g", "tests/test_alignment.py"),
    mutation("theory_without_lr", "callbacks/alignment.py", 'out["theory/stability"] = rho * eta * lambda_1',
             'out["theory/stability"] = rho * lambda_1', "Theorem 1's stability leaves out eta", P),
    mutation("lanczos_no_reorth", "modules/lanczos.py", "for _ in range(2):  # full reorthogonalisation, twice",
             "for _ in range(0):  # full reorthogonalisation, twice",
             "Lanczos without reorthogonalisation (ghost eigenvalues)", P),
    mutation("step_decay_gamma", "conf/scheduler/step_decay.yaml", "gamma: 0.8", "gamma: 0.5",
             "step decay is not lr x 0.8", P),
    # --- tasks ---------------------------------------------------------------------------------------
    mutation("dms_test_is_train_stream", "datamodules/dms.py",
             "torch.Generator().manual_seed(2 * self.seed + 1)", "torch.Generator().manual_seed(2 * self.seed)",
             "dms test trials are redraws of the training trials", "tests/test_dms.py"),
    mutation("pattern_test_is_train_stream", "datamodules/pattern.py",
             "torch.Generator().manual_seed(3 * self.seed + 2)", "torch.Generator().manual_seed(3 * self.seed + 1)",
             "pattern test realisations are the training noise", P, "tests/test_tasks.py"),
    mutation("seqmnist_split_overlaps", "datamodules/seqmnist.py", "            start += int(k[c])\n",
             "            start += 0\n", "seqmnist train and test images overlap", "tests/test_tasks.py"),
    # --- checkpoint ----------------------------------------------------------------------------------
    mutation("ckpt_dale_not_checked", "rulescape/checkpoint.py", '"model.activation", "model.dale", ',
             '"model.activation", ', "a checkpoint with another model.dale resumes silently", P),
    mutation("ckpt_float64_not_checked", "rulescape/checkpoint.py", '"model.dale", "float64")', '"model.dale")',
             "a checkpoint with another float64 resumes silently", P),
    mutation("ckpt_task_not_checked", "rulescape/checkpoint.py", '("rule.name", "task.name", ', '("rule.name", ',
             "a checkpoint of another task resumes silently", P),
    # --- report --------------------------------------------------------------------------------------
    mutation("report_std_ddof0", "analysis/stats.py", "float(x.std(ddof=1))", "float(x.std(ddof=0))",
             "report std with ddof=0", "tests/test_report.py"),
    mutation("report_spearman_is_pearson", "analysis/stats.py", "sr, sp = sps.spearmanr(a, b)",
             "sr, sp = sps.pearsonr(a, b)", "report's Spearman r is Pearson's", "tests/test_report.py"),
    mutation("report_stability_without_lr", "analysis/stats.py", "out.append((step, abs(r) * lr * lam[i][1]))",
             "out.append((step, abs(r) * lam[i][1]))", "report's computed |rho| eta lambda leaves out eta", P),
    mutation("report_stability_lambda_strictly_before", "analysis/stats.py",
             'np.searchsorted(lam_steps, step, side="right")', 'np.searchsorted(lam_steps, step, side="left")',
             "report's Theorem 1 uses the lambda before, not at, the rho step", P),
]
