//! The Prometheus recorder behind `/metrics`.

/// How often histogram samples are folded into their buckets when nothing scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's metrics registry, in Prometheus text format on `/metrics` of the gateway and
/// of the worker's admin port. Installed on first use; one per process, so every app a test
/// builds in one process shares it.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        // Seconds: from a fast reveal to a job that waited for a slow engine.
        const BUCKETS: [f64; 14] = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
        ];
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("non-empty buckets")
            .install_recorder()
            .expect("the only metrics recorder of the process");
        // Histogram samples pile up in the recorder until something folds them into buckets:
        // a scrape, or this upkeep. Without it, a process nobody scrapes grows with every
        // request. A thread of its own, so it runs whatever runtime the process has.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn the metrics upkeep thread");
        handle
    })
}
