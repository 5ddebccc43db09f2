//! Line framing cuts bytes from the network: any input, split anywhere, must give the same
//! messages as the whole input at once, never panic, and never lose or invent a byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::framing::{Framer, Framing};

/// Frames `chunks` in order; returns every message byte plus terminators, concatenated,
/// or None if a line was too long.
fn frame(chunks: &[&[u8]], max_len: usize) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut framer = Framer::new(Framing::Line { max_len });
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    let mut replay = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(span) = framer.next_frame(&buf).ok()? {
            messages.push(buf[span.payload.clone()].to_vec());
            replay.extend_from_slice(&buf[..span.consumed()]);
            buf.drain(..span.consumed());
        }
    }
    if let Some(span) = framer.finish(&buf) {
        messages.push(buf[span.payload.clone()].to_vec());
        replay.extend_from_slice(&buf[..span.consumed()]);
    }
    Some((messages, replay))
}

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (cut, max, data) = input;
    let max_len = usize::from(max % 512) + 1;
    let cut = usize::from(cut).min(data.len());
    let whole = frame(&[data], max_len);
    let split = frame(&[&data[..cut], &data[cut..]], max_len);
    match (&whole, &split) {
        (Some((a, replay)), Some((b, _))) => {
            assert_eq!(a, b, "splitting the stream changed the messages");
            assert_eq!(replay.as_slice(), data, "framing lost or invented bytes");
        }
        (None, None) => {}
        // A split can only reveal an over-long line earlier, never hide one.
        (None, Some(_)) | (Some(_), None) => {
            panic!("whole={whole:?} split={split:?}: too-long detection depends on the split")
        }
    }
});
