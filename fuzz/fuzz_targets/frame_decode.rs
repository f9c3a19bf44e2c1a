//! Feeds arbitrary bytes to every pdc-codec decoder under tight limits:
//! any panic, or any success that does not re-encode to an equal value, is
//! a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pdc_codec::{Codec, Limits, Order, Product, Transaction};

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new().with_limits(Limits {
        max_frame_bytes: 1 << 16,
        max_decoded_bytes: 1 << 18,
        max_batch_items: 4096,
    });
    let _ = codec.open(data);
    if let Ok(t) = codec.decode::<Transaction>(data) {
        assert_eq!(codec.decode::<Transaction>(&codec.encode(&t).unwrap()).unwrap(), t);
    }
    let _ = codec.decode::<Order>(data);
    let _ = codec.decode_batch::<Product>(data);
    if let Ok(ts) = codec.decode_transactions(data) {
        assert_eq!(codec.decode_transactions(&codec.encode_transactions(&ts).unwrap()).unwrap(), ts);
    }
    if let Ok(os) = codec.decode_orders(data) {
        assert_eq!(codec.decode_orders(&codec.encode_orders(&os).unwrap()).unwrap(), os);
    }
});
