//! The code in `src/gen` is generated from the `.proto` files and checked in,
//! so that building needs no `protoc`. This test generates it again with pure
//! Rust tools (protox parses the `.proto`, prost-build and tonic-prost-build
//! write the code) and fails when the checked-in files differ; with
//! `SWITCHYARD_REGEN_PROTO=1` it writes them instead (`make proto`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &["switchyard/fleet/v1/fleet.proto"];

/// Messages whose `Debug` is written by hand (they hold secrets).
const SECRET_MESSAGES: &[&str] = &[
    ".switchyard.fleet.v1.Secrets",
    ".switchyard.fleet.v1.AwsAuth",
];

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(PROTOS, [root]).expect("the .proto files compile");
    let messages = out.join("messages");
    let services = out.join("services");
    std::fs::create_dir_all(&messages).unwrap();
    std::fs::create_dir_all(&services).unwrap();
    // Messages only (what the filter links).
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .btree_map(".")
        .skip_debug(SECRET_MESSAGES)
        .out_dir(&messages)
        .compile_fds(fds.clone())
        .expect("prost writes the messages");
    // The service (client and server) over the same messages (feature `grpc`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .extern_path(".switchyard.fleet.v1", "crate::fleet::v1")
        .out_dir(&services)
        .compile_fds(fds)
        .expect("tonic writes the service");
}

fn files() -> Vec<(PathBuf, &'static str)> {
    vec![
        (
            PathBuf::from("messages/switchyard.fleet.v1.rs"),
            "switchyard.fleet.v1.rs",
        ),
        (
            PathBuf::from("services/switchyard.fleet.v1.rs"),
            "switchyard.fleet.v1.grpc.rs",
        ),
    ]
}

#[test]
fn checked_in_code_matches_the_proto_files() {
    let tmp = std::env::temp_dir().join(format!("switchyard-proto-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    generate(&tmp);
    let gen_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    let regen = std::env::var_os("SWITCHYARD_REGEN_PROTO").is_some();
    let mut stale = Vec::new();
    for (made, checked_in) in files() {
        let fresh = std::fs::read_to_string(tmp.join(&made)).unwrap();
        let path = gen_dir.join(checked_in);
        if regen {
            std::fs::write(&path, &fresh).unwrap();
        } else if std::fs::read_to_string(&path).unwrap_or_default() != fresh {
            stale.push(path.display().to_string());
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run `make proto` (SWITCHYARD_REGEN_PROTO=1 cargo test -p switchyard-proto --test generated)"
    );
}
