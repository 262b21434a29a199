#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::time::Duration;
use switchyard_tests::harness::{Dialect, Gateway, Mock, Paths, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure() {
    let paths = Paths::discover();
    let dir = Scratch::new("measure");
    let a = Mock::start(&paths, &dir.0, "a", Dialect::Openai, &[]);
    for workers in [1u32, 2, 4] {
        let gw = Gateway::builder().provider(&a).route("chat", &["a/m"]).workers(workers).start(&paths, &dir).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s0 = gw.stat("cluster.switchyard_fleet.upstream_rq_total").await.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s1 = gw.stat("cluster.switchyard_fleet.upstream_rq_total").await.unwrap_or(0);
        println!("MEASURE workers={workers}: {} exchanges in 5 s = {:.1}/s", s1 - s0, (s1 - s0) as f64 / 5.0);
    }
}
