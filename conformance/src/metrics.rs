//! `/metrics` for Prometheus: installs `metrics-exporter-prometheus` as the
//! process's recorder, with the server's histogram buckets
//! ([`rtm_driver::metrics::HISTOGRAM_BUCKETS`]), and serves it over HTTP on
//! a thread of its own (its own small tokio runtime), whatever runtime the
//! server runs on. Call it before the server starts: the server registers
//! its instruments with the recorder installed then.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Installs the Prometheus recorder and serves `GET /metrics` (any path, as
/// the exporter does) on `addr`. `Err` says why (the address is taken, a
/// recorder is already installed).
pub fn serve_prometheus(addr: SocketAddr) -> Result<(), String> {
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, buckets) in rtm_driver::metrics::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Suffix(name.to_owned()), buckets)
            .map_err(|e| format!("buckets of {name}: {e}"))?;
    }
    let (ready, built) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("metrics-exporter".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready.send(Err(format!("a runtime for the exporter: {err}")));
                    return;
                }
            };
            runtime.block_on(async move {
                match builder.build() {
                    Ok((recorder, exporter)) => {
                        let _ = ready.send(Ok(recorder));
                        if let Err(err) = exporter.await {
                            tracing::error!(?err, "the metrics listener stopped");
                        }
                    }
                    Err(err) => {
                        let _ = ready.send(Err(format!("metrics listener on {addr}: {err}")));
                    }
                }
            });
        })
        .map_err(|e| format!("a thread for the exporter: {e}"))?;
    let recorder = built
        .recv()
        .map_err(|_| "the metrics exporter did not start".to_owned())??;
    metrics::set_global_recorder(recorder)
        .map_err(|_| "a metrics recorder is already installed".to_owned())
}
