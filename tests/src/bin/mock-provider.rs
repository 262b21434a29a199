//! `mock-provider`: a simulated LLM provider speaking one provider's dialect.
//! Usage: `mock-provider --name NAME --dialect openai|anthropic|azure_openai|gemini|vertex|bedrock [--addr 127.0.0.1:0]
//! [--api-key KEY] [--models a,b] [--fail-rate 0.3] [--fail-status 503]`.
//! Prints `mock-provider NAME listening on ADDR` once bound.

use switchyard_tests::mock::{Dialect, MockConfig};

fn usage(msg: &str) -> ! {
    eprintln!("mock-provider: {msg}");
    eprintln!(
        "usage: mock-provider --name NAME --dialect openai|anthropic|azure_openai|gemini|vertex|bedrock [--addr 127.0.0.1:0] [--api-key KEY] [--models a,b] [--fail-rate F] [--fail-status S]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut cfg = MockConfig::new("mock", Dialect::Openai);
    let mut addr = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--name" => cfg.name = value(),
            "--dialect" => {
                let name = value();
                cfg.dialect = Dialect::parse(&name).unwrap_or_else(|| usage(&format!("unknown dialect {name}")))
            }
            "--addr" => addr = value(),
            "--api-key" => cfg.api_key = Some(value()),
            "--models" => cfg.models = value().split(',').map(str::to_string).collect(),
            "--fail-rate" => cfg.fail_rate = value().parse().unwrap_or_else(|_| usage("--fail-rate takes 0..1")),
            "--fail-status" => {
                cfg.fail_status = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--fail-status takes a status"))
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let name = cfg.name.clone();
    match switchyard_tests::mock::serve(cfg, &addr).await {
        Ok((bound, task)) => {
            println!("mock-provider {name} listening on {bound}");
            let _ = task.await;
        }
        Err(e) => {
            eprintln!("mock-provider: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}
