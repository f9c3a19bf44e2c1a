//! The browser's clock.

use pdc_clock::{Clock, Instant};
use wasm_bindgen::JsCast;

/// [`Clock`] over `performance.now()` (monotonic) and `Date.now()` (wall),
/// in a worker or on the main thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserClock;

impl Clock for BrowserClock {
    fn wall_ms(&self) -> u64 {
        js_sys::Date::now().max(0.0) as u64
    }

    fn now(&self) -> Instant {
        let ms = js_sys::global()
            .dyn_into::<web_sys::WorkerGlobalScope>()
            .ok()
            .and_then(|g| g.performance())
            .map(|p| p.now())
            // Not in a worker: the wall clock, still never negative.
            .unwrap_or_else(js_sys::Date::now)
            .max(0.0);
        Instant::from_origin(std::time::Duration::from_micros((ms * 1000.0) as u64))
    }
}
