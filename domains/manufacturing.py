"""Manufacturing: process fault classification on the Tennessee Eastman process."""

from lepton.domains.spec import Column, DataSource, DomainSpec, Dtype, FeatureRecipe, LeakageSpec, Role, SplitSpec

SENSORS = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]

SPEC = DomainSpec(
    name="manufacturing",
    description="Process faults: which of 21 faults (or normal operation, 0) a TEP sample shows.",
    data=DataSource(path="tep_train.parquet", holdout_path="tep_test.parquet"),
    columns=(
        *(Column(name=s, dtype=Dtype.FLOAT) for s in SENSORS),
        Column(name="run", dtype=Dtype.INT, role=Role.GROUP),
        Column(name="sample", dtype=Dtype.INT, role=Role.TIME),
        Column(name="fault", dtype=Dtype.INT, role=Role.TARGET),
    ),
    task="multiclass",
    normal_class=0,
    # The simulation's own train/test runs; validation is the tail of each training run.
    # Validation (the tail of each run) holds the later fault dynamics: refit on it once chosen.
    split=SplitSpec(kind="given", validation_size=0.2, refit=True),
    primary_metric="f1_macro",
    metrics=("f1_macro", "accuracy", "fault_detection_rate", "false_alarm_rate", "detection_delay"),
    # An alarm (the most probable fault) only when 1 - P(normal) reaches a threshold set on
    # validation's normal rows for at most 10% false alarms. Arg-max decisions raised one on over
    # half of the normal test rows: normal operation looks like faults 3, 9 and 15, which barely
    # show. Validation holds one normal run's tail (100 samples, worth about one independent row
    # once their autocorrelation counts), so it cannot show 10%: the threshold raises no alarm on
    # it, and the holdout gate holds the budget.
    false_alarm_budget=0.1,
    gates={"f1_macro": 0.55, "false_alarm_rate": 0.1},
    latency_budget_ms=20.0,
    features=FeatureRecipe(name="rolling", window=10),
    # Some faults show in one sensor alone: fault 6 (loss of the A feed) drives the A feed flow
    # (xmeas_1) to zero and its valve (xmv_3) open, so either tells fault 6 from the rest with ROC
    # AUC above 0.99. That is the process, not a leak: the sentinel's one-class rule (a test
    # result that is one of the outcomes) is off here. Drawn at scale, fault 6 rose above the
    # rule's 5% of rows by chance and stopped the run; every other check still applies.
    leakage=LeakageSpec(one_class=False),
    # An alarm filter of 3 hours (60 samples of 3 minutes): a decision is the mean of the class
    # probabilities over the run's last 60 samples. Faults persist, so this trades detection
    # delay (reported) for far fewer flickering decisions between similar faults.
    smoothing=60,
    schedule="0 5 * * 1",
    # Retrained when the estimate without labels falls (the default, on_estimated_loss). The
    # refitted 22-class scores are not calibrated, so the estimate draws through per-class maps
    # fitted on validation, and still misses the test runs' macro-F1 by about 0.06: validation is
    # the tail of each run, another regime. A batch is compared with the same estimate of the
    # holdout, so that bias cancels: on bench/retrain.py's scenarios it retrained all 40 batches
    # that hurt and 1 of 40 that did not, where drift retrained all 80 (bench/README.md).
)
