use super::*;
use proptest::prelude::*;

/// A `HealthCheckResponse { status }` message as protobuf writes it.
fn response(status: u64) -> Vec<u8> {
    let mut m = BytesMut::new();
    m.put_u8(0x08);
    put_varint(&mut m, status);
    m.to_vec()
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

#[test]
fn the_request_for_the_whole_server_is_an_empty_message() {
    assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
    assert_eq!(
        &request_frame("echo")[..],
        &[0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']
    );
}

#[test]
fn statuses_decode_to_verdicts() {
    let verdict = |m: &[u8]| Verdict::of_status(decode_status(m).unwrap());
    assert_eq!(verdict(&response(1)), Verdict::Serving);
    assert_eq!(verdict(&response(2)), Verdict::NotServing);
    assert_eq!(
        verdict(&response(3)),
        Verdict::NotServing,
        "SERVICE_UNKNOWN"
    );
    assert_eq!(verdict(&response(0)), Verdict::Unknown);
    assert_eq!(verdict(&[]), Verdict::Unknown, "proto3 leaves 0 out");
    assert_eq!(verdict(&response(99)), Verdict::Unknown, "a newer value");
}

#[test]
fn unknown_fields_are_skipped_and_the_last_status_counts() {
    let mut m = vec![0x12, 2, b'h', b'i']; // field 2, a string
    m.extend_from_slice(&[0x1d, 1, 2, 3, 4]); // field 3, fixed32
    m.extend_from_slice(&[0x21, 0, 0, 0, 0, 0, 0, 0, 0]); // field 4, fixed64
    m.extend(response(2));
    m.extend(response(1));
    assert_eq!(decode_status(&m), Ok(1));
}

#[test]
fn malformed_messages_are_errors() {
    assert_eq!(decode_status(&[0x08]), Err(DecodeError::Truncated));
    assert_eq!(decode_status(&[0x12, 5, 1]), Err(DecodeError::Truncated));
    assert_eq!(decode_status(&[0x0a, 0]), Err(DecodeError::StatusType(2)));
    assert_eq!(decode_status(&[0x17]), Err(DecodeError::WireType(7)));
    assert_eq!(decode_status(&[0xff; 11]), Err(DecodeError::Truncated));
}

#[test]
fn frames_split_however_the_data_arrives() {
    let mut stream = framed(&response(1));
    stream.extend(framed(&response(2)));
    stream.extend(framed(&[]));
    for cut in 0..stream.len() {
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for part in [&stream[..cut], &stream[cut..]] {
            frames.push(part);
            while let Some(m) = frames.next_message().unwrap() {
                got.push(decode_status(&m).unwrap());
            }
        }
        assert_eq!(got, [1, 2, 0], "cut at {cut}");
    }
}

#[test]
fn compressed_or_oversized_frames_are_refused() {
    let mut frames = Frames::default();
    frames.push(&[1, 0, 0, 0, 2, 0x08, 1]);
    assert_eq!(frames.next_message(), Err(DecodeError::Compressed));
    let mut frames = Frames::default();
    frames.push(&[0, 0, 1, 0, 0]);
    assert_eq!(frames.next_message(), Err(DecodeError::TooLarge(65536)));
}

#[test]
fn unimplemented_is_the_status_or_a_404() {
    let status = |code| HealthError::Status {
        code,
        message: String::new(),
    };
    assert!(status(12).is_unimplemented());
    assert!(HealthError::HttpStatus(404).is_unimplemented());
    assert!(!status(14).is_unimplemented());
    assert!(!HealthError::HttpStatus(503).is_unimplemented());
    assert!(!HealthError::NoMessage.is_unimplemented());
}

#[test]
fn verdicts_are_named_as_endpoints_shows_them() {
    let names: Vec<_> = Verdict::ALL.iter().map(|v| v.name()).collect();
    assert_eq!(
        names,
        ["unknown", "serving", "not-serving", "unimplemented"]
    );
}

#[test]
fn a_verdict_change_is_reported_once() {
    let h = GrpcHealth::default();
    assert_eq!(h.verdict(), Verdict::Unknown);
    assert!(!h.is_not_serving());
    assert!(h.set(Verdict::NotServing));
    assert!(!h.set(Verdict::NotServing));
    assert!(h.is_not_serving());
    assert!(h.set(Verdict::Serving));
    for v in Verdict::ALL {
        h.set(v);
        assert_eq!(h.verdict(), v);
        assert_eq!(h.is_not_serving(), v == Verdict::NotServing, "{}", v.name());
    }
}

proptest! {
    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_status(&bytes);
        let mut frames = Frames::default();
        frames.push(&bytes);
        while let Ok(Some(m)) = frames.next_message() {
            let _ = decode_status(&m);
        }
    }

    #[test]
    fn any_status_round_trips(status in any::<u64>()) {
        prop_assert_eq!(decode_status(&response(status)), Ok(status));
    }
}
