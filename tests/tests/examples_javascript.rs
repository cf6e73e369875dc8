//! The `js-hello` example end to end: deployed from its folder by the `squall` CLI, as a user
//! deploys it, and invoked over real HTTP. (The JavaScript chatbot runs with the Rust one's
//! scenarios in `examples_chatbot`.)

use squall_tests::{check_hello_example, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_hello_greets_from_config_counts_visits_per_name_and_logs() {
    let cluster = Cluster::start().await;
    check_hello_example(
        &cluster,
        "js-hello",
        "js-hello",
        "RangeError: a name is at most 64 bytes of UTF-8",
    )
    .await;
}
