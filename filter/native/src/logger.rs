//! The `log` crate's records (the filter logic logs through it) go to Envoy's log,
//! component `dynamic_modules`.
#![forbid(unsafe_code)]

use crate::api::{self, Level};

struct EnvoyLogger;

fn level(l: log::Level) -> Level {
    match l {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        api::log_enabled(level(metadata.level()))
    }

    fn log(&self, record: &log::Record<'_>) {
        let l = level(record.level());
        if api::log_enabled(l) {
            api::log(l, &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Routes `log` records to Envoy (once per process; later calls do nothing).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
