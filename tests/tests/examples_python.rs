//! The `python-hello` example end to end: deployed from its folder by the `squall` CLI, as a
//! user deploys it, and invoked over real HTTP. (The Python web form runs with the Rust one's
//! scenarios in `examples_web_form`.)

use squall_tests::{check_hello_example, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hello_greets_from_config_counts_visits_per_name_and_logs() {
    let cluster = Cluster::start().await;
    check_hello_example(
        &cluster,
        "python-hello",
        "py-hello",
        "ValueError: a name is at most 64 bytes of UTF-8",
    )
    .await;
}
