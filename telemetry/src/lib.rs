//! Logging and OpenTelemetry tracing of Squall's processes, and W3C trace context helpers.
//!
//! Invariant: span export is on only when an `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (non-empty); otherwise no OpenTelemetry layer
//! is installed and spans cost what plain `tracing` spans cost. The exporter follows the
//! standard `OTEL_*` variables: protocol (`grpc` or `http/protobuf`, the default), headers,
//! timeout, `OTEL_SERVICE_NAME`, and the batch processor's `OTEL_BSP_*`.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::time::SystemTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

pub use opentelemetry::{Context, KeyValue};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot set up the OTLP span exporter (check the OTEL_EXPORTER_OTLP_* variables): {0}"
    )]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps span export running; `shutdown` flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. Call it from a blocking context (not an async task).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("cannot flush the last spans: {error}");
            }
        }
    }
}

/// Set once `init` installed span export.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans: without export, callers skip building span data.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the environment asks for OTLP export.
pub fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber: human logs on stderr filtered by `RUST_LOG` (default
/// `info`), plus OTLP span export when configured. With gRPC export this must run inside a
/// tokio runtime.
pub fn init(service_name: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if !export_configured() {
        // Without export no span is ever looked at: disable them all, so a span costs the
        // hot path nothing (no field formatting, no span storage) and logs carry their own
        // fields.
        let no_spans = tracing_subscriber::filter::filter_fn(|meta| !meta.is_span());
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        tracing_subscriber::registry()
            .with(no_spans)
            .with(filter)
            .with(fmt)
            .init();
        return Ok(Telemetry { provider: None });
    }
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| service_name.to_string()),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(service_name);
    // Only Squall's own spans are exported; dependencies' spans stay in the logs.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.target().starts_with("squall")
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The context a W3C `traceparent` names; the empty context when it is missing or invalid.
pub fn context_from_traceparent(traceparent: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Whether `traceparent` is a valid W3C trace context.
pub fn context_is_valid(traceparent: &str) -> bool {
    context_from_traceparent(Some(traceparent))
        .span()
        .span_context()
        .is_valid()
}

/// The `traceparent` of `span`, when it is exported (None without export).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `parent` the parent of `span`, which must not have been entered yet.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Records a span that already happened, from `start` to `end`, under `parent` (for waits
/// measured before any span could be open, such as time in the queue). No-op without export.
pub fn record_past_span(
    name: &'static str,
    parent: &Context,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    let tracer: opentelemetry::global::BoxedTracer = opentelemetry::global::tracer("squall");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(end.max(start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_traceparent_gives_an_empty_context() {
        for bad in [
            None,
            Some(""),
            Some("00-zz-11-01"),
            Some("not a traceparent"),
        ] {
            assert!(!context_from_traceparent(bad)
                .span()
                .span_context()
                .is_valid());
        }
        let cx = context_from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn without_a_subscriber_a_span_has_no_traceparent() {
        assert_eq!(traceparent_of(&tracing::info_span!("x")), None);
    }
}
