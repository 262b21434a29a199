//! `noop`: continues everywhere. The benchmark floor of a native filter.
#![forbid(unsafe_code)]

use crate::api::{Filter, FilterConfig};

pub struct NoopConfig;

struct Noop;

impl FilterConfig for NoopConfig {
    fn new_filter(&self) -> Box<dyn Filter> {
        Box::new(Noop)
    }
}

impl Filter for Noop {}
