//! Feeds arbitrary bytes to the sync protocol's decoders as the server and
//! the terminal read them (pdc-codec frames and JSON) and to the terminal
//! report decoder: any panic, or a decoded message that does not survive a
//! round trip, is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pdc_codec::{Codec, Limits};
use pdc_sync::{MetricsReport, PullRequest, PullResponse, PushRequest, PushResponse};

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new().with_limits(Limits {
        max_frame_bytes: 1 << 16,
        max_decoded_bytes: 1 << 18,
        max_batch_items: 4096,
    });
    if let Ok(r) = codec.decode::<PushRequest>(data) {
        assert_eq!(codec.decode::<PushRequest>(&codec.encode(&r).unwrap()).unwrap(), r);
    }
    let _ = codec.decode::<PushResponse>(data);
    let _ = codec.decode::<PullRequest>(data);
    let _ = codec.decode::<PullResponse>(data);
    let _ = codec.decode::<MetricsReport>(data);
    let _ = pdc_monitor::TerminalReport::decode(&codec, data);
    if let Ok(r) = serde_json::from_slice::<PushRequest>(data) {
        assert_eq!(serde_json::from_slice::<PushRequest>(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
    }
    let _ = serde_json::from_slice::<PullRequest>(data);
});
