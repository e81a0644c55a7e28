"""Evaluation: prompts (``prompts``), batched log-likelihood scoring and generation (``scoring``),
answer normalisation, normalized scores and bootstrap CIs (``metrics``), and the suites in the real
schemas (``suites``: MMLU, BBH, (inputs, targets) pairs). Params: ``config.EvaluateConfig``."""
