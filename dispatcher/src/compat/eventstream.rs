//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), the wire format of Lambda's InvokeWithResponseStream answer: each message is its total and header lengths, a CRC32 of those eight bytes, its headers (string-typed), its payload, and a CRC32 of everything before it.

use bytes::{BufMut, Bytes, BytesMut};

/// The header type of a string value.
const STRING: u8 = 7;

/// One event-stream message with string `headers` and `payload`.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded = BytesMut::new();
    for (name, value) in headers {
        encoded.put_u8(name.len() as u8);
        encoded.put_slice(name.as_bytes());
        encoded.put_u8(STRING);
        encoded.put_u16(value.len() as u16);
        encoded.put_slice(value.as_bytes());
    }
    let total = 12 + encoded.len() + payload.len() + 4;
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(encoded.len() as u32);
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.put_u32(prelude_crc);
    out.put_slice(&encoded);
    out.put_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.put_u32(message_crc);
    out.freeze()
}

/// An event of type `event_type` (`PayloadChunk`, `InvokeComplete`) whose payload is of
/// `content_type`.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":event-type", event_type),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a message back: its headers and payload, checking both CRCs.
    fn decode(bytes: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let total = u32_at(0) as usize;
        let headers_len = u32_at(4) as usize;
        assert_eq!(total, bytes.len());
        assert_eq!(u32_at(8), crc32fast::hash(&bytes[..8]));
        assert_eq!(u32_at(total - 4), crc32fast::hash(&bytes[..total - 4]));
        let mut headers = Vec::new();
        let mut at = 12;
        while at < 12 + headers_len {
            let name_len = bytes[at] as usize;
            let name = String::from_utf8(bytes[at + 1..at + 1 + name_len].to_vec()).unwrap();
            at += 1 + name_len;
            assert_eq!(bytes[at], STRING);
            let value_len = u16::from_be_bytes([bytes[at + 1], bytes[at + 2]]) as usize;
            let value = String::from_utf8(bytes[at + 3..at + 3 + value_len].to_vec()).unwrap();
            at += 3 + value_len;
            headers.push((name, value));
        }
        (headers, bytes[12 + headers_len..total - 4].to_vec())
    }

    #[test]
    fn a_message_carries_its_lengths_headers_payload_and_both_crcs() {
        let bytes = event("PayloadChunk", "application/octet-stream", b"hello");
        let (headers, payload) = decode(&bytes);
        assert_eq!(payload, b"hello");
        assert_eq!(headers[0], (":event-type".into(), "PayloadChunk".into()));
        assert_eq!(headers[2], (":message-type".into(), "event".into()));
    }

    #[test]
    fn an_empty_message_is_sixteen_bytes() {
        let bytes = message(&[], b"");
        assert_eq!(bytes.len(), 16);
        assert_eq!(decode(&bytes), (Vec::new(), Vec::new()));
    }
}
