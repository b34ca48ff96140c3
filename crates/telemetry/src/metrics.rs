//! The Prometheus recorder behind `/metrics`.

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
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("non-empty buckets")
            .install_recorder()
            .expect("the only metrics recorder of the process")
    })
}
