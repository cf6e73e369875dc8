//! The end-to-end suite as one test binary (one link instead of one per file): each file beside
//! this one is a module, named after the file.

mod api;
mod batch;
mod broker_auth;
mod cancel;
mod cli;
mod cloudevents;
mod cluster;
mod confinement;
mod console;
mod dead_letters;
mod destinations;
mod egress;
mod events;
mod exactly_once;
mod examples_chatbot;
mod examples_etl;
mod examples_go;
mod examples_iot;
mod examples_java;
mod examples_javascript;
mod examples_ml;
mod examples_python;
mod examples_web_form;
mod failures;
mod fleet;
mod forged_jobs;
mod function_credentials;
mod fuzz;
mod host_services;
mod http_limits;
mod integrity;
mod invoke;
mod isolation;
mod keda;
mod keys;
mod lambda;
mod metrics;
mod payloads;
mod queries;
mod quotas;
mod raw_nats;
mod reliability;
mod result_path;
mod runtimes_cli;
mod runtimes_go;
mod runtimes_java;
mod runtimes_javascript;
mod runtimes_python;
mod security;
mod server_list;
mod streaming;
mod tls;
mod topology;
mod tracing;
mod versions;
mod web;

/// Every file beside this one is one of its modules: with autotests off, a file left out would
/// never run.
#[test]
fn every_test_file_is_a_module_of_the_suite() {
    let dir = squall_tests::workspace_root().join("tests/tests");
    let suite = std::fs::read_to_string(dir.join("suite.rs")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && name != "suite" {
            assert!(
                suite.lines().any(|line| line == format!("mod {name};")),
                "tests/tests/{name}.rs is not a module of tests/tests/suite.rs"
            );
        }
    }
}
