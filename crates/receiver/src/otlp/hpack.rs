//! HPACK (RFC 7541), the decoding side: the header blocks of the requests the OTLP/gRPC
//! connections read (`http2.rs`). Strings come out borrowed from the block when they are
//! literal; Huffman-coded ones are decoded through a table built once.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// A field of the dynamic table: its name and value.
type Field = (Box<[u8]>, Box<[u8]>);

/// Decodes a connection's header blocks in order, keeping its dynamic table.
pub(crate) struct Decoder {
    table: VecDeque<Field>,
    /// The table's size as HPACK counts it (each entry 32 more than its bytes).
    size: usize,
    /// The table's current limit, which the client may lower (and raise up to `limit`).
    max_size: usize,
    /// The limit this side advertised (`SETTINGS_HEADER_TABLE_SIZE`).
    limit: usize,
}

/// Why a header block could not be decoded (a connection error: the tables are out of step).
pub(crate) type Error = &'static str;

impl Decoder {
    pub(crate) fn new(limit: usize) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// Decode `block`, giving each field's name and value to `field` in order.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        let mut at = 0;
        let mut fields = false;
        let (mut name_buf, mut value_buf) = (Vec::new(), Vec::new());
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
                fields = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if fields {
                    return Err("a table size update after a field");
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.limit {
                    return Err("a table size update over the limit advertised");
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // A literal: with incremental indexing (01), without (0000) or never indexed
                // (0001); its name indexed or literal.
                let indexing = first & 0xc0 == 0x40;
                let index = integer(block, &mut at, if indexing { 6 } else { 4 })?;
                fields = true;
                if indexing {
                    let name: Box<[u8]> = if index == 0 {
                        string(block, &mut at, &mut name_buf)?.into()
                    } else {
                        self.entry(index)?.0.into()
                    };
                    let value: Box<[u8]> = string(block, &mut at, &mut value_buf)?.into();
                    field(&name, &value);
                    self.insert(name, value);
                } else {
                    let name = if index == 0 {
                        string(block, &mut at, &mut name_buf)?
                    } else {
                        self.entry(index)?.0
                    };
                    let value = string(block, &mut at, &mut value_buf)?;
                    field(name, value);
                }
            }
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        match index {
            0 => Err("a field indexed 0"),
            1..=61 => Ok(STATIC_TABLE[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or("a field indexed past the table"),
        }
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            // An entry larger than the table empties it and is not kept.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evict the oldest entries until `room` more fits.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + 32;
        }
    }
}

/// An HPACK integer with an `bits`-bit prefix, at `*at` (which it moves past it).
fn integer(block: &[u8], at: &mut usize, bits: u32) -> Result<usize, Error> {
    let mask = (1usize << bits) - 1;
    let mut value = usize::from(*block.get(*at).ok_or("a block cut inside an integer")?) & mask;
    *at += 1;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or("a block cut inside an integer")?;
        *at += 1;
        if shift > 21 {
            return Err("an integer too large");
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A string literal at `*at` (which it moves past it): borrowed from the block, or, if
/// Huffman-coded, decoded into `buf`.
fn string<'a>(block: &'a [u8], at: &mut usize, buf: &'a mut Vec<u8>) -> Result<&'a [u8], Error> {
    let huffman = block.get(*at).ok_or("a block cut before a string")? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let bytes = block
        .get(*at..*at + len)
        .ok_or("a block cut inside a string")?;
    *at += len;
    if !huffman {
        return Ok(bytes);
    }
    buf.clear();
    huffman_decode(bytes, buf)?;
    Ok(buf)
}

/// The Huffman code's tree, flattened: each node's two children, an index of another node or,
/// negative, `-(symbol + 1)`.
fn tree() -> &'static [[i16; 2]] {
    static TREE: OnceLock<Vec<[i16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[0i16; 2]];
        for (symbol, &(code, len)) in HUFFMAN_CODE_TABLE.iter().enumerate() {
            let mut node = 0usize;
            for bit in (0..len).rev() {
                let b = ((code >> bit) & 1) as usize;
                if bit == 0 {
                    nodes[node][b] = -(symbol as i16 + 1);
                } else {
                    if nodes[node][b] == 0 {
                        nodes.push([0; 2]);
                        nodes[node][b] = (nodes.len() - 1) as i16;
                    }
                    node = nodes[node][b] as usize;
                }
            }
        }
        nodes
    })
}

/// Decode a Huffman-coded string into `out`. Its padding must be the most significant bits of
/// EOS (all ones), shorter than a byte; EOS itself may not appear.
fn huffman_decode(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let tree = tree();
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all were ones.
    let (mut pending, mut ones) = (0u32, true);
    for &byte in bytes {
        for bit in (0..8).rev() {
            let b = usize::from((byte >> bit) & 1);
            pending += 1;
            ones &= b == 1;
            let next = tree[node][b];
            if next < 0 {
                let symbol = -(next + 1);
                if symbol == 256 {
                    return Err("EOS inside a Huffman string");
                }
                out.push(symbol as u8);
                node = 0;
                pending = 0;
                ones = true;
            } else {
                node = next as usize;
            }
        }
    }
    if pending > 7 || !ones {
        return Err("bad padding after a Huffman string");
    }
    Ok(())
}

/// The static table (RFC 7541 Appendix A).
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The Huffman code (RFC 7541 Appendix B): each symbol's code and its length in bits.
static HUFFMAN_CODE_TABLE: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, Error> {
        let mut fields = Vec::new();
        decoder.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn the_rfc_examples_of_requests_with_huffman_coding_decode() {
        // RFC 7541 C.4: three requests on one connection, the table carried between them.
        let mut d = Decoder::new(4096);
        let first = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(first, Ok(pairs(&base)));
        let second = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf"));
        let mut want = base.to_vec();
        want.push(("cache-control", "no-cache"));
        assert_eq!(second, Ok(pairs(&want)));
        let third = decode_all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        );
        let want = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(third, Ok(pairs(&want)));
        assert_eq!(d.size, 164); // as the RFC's table after the third request
    }

    #[test]
    fn broken_blocks_are_errors() {
        let mut d = Decoder::new(4096);
        for (block, why) in [
            (hex("80"), "index 0"),
            (hex("bf"), "past the table"),      // index 63, table empty
            (hex("41"), "cut before a string"), // literal, indexed name, no value
            (hex("4105 6162"), "cut inside a string"), // value of 5 bytes, 2 given
            (hex("41 81ff"), "padding too long"), // Huffman: 8 ones
            (hex("41 8100"), "padding not ones"), // Huffman: zeros
            (hex("3fe2 1f"), "size update over the limit"), // 4097
            (hex("82 20"), "size update after a field"),
            (hex("ff ffff ffff ff"), "integer too large"),
        ] {
            assert!(decode_all(&mut d, &block).is_err(), "{why}");
        }
    }

    /// Huffman-code `bytes` (for the tests: the decoder's own table, read the other way).
    fn huffman_encode(bytes: &[u8]) -> Vec<u8> {
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
        for &b in bytes {
            let (code, len) = HUFFMAN_CODE_TABLE[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
        }
        out
    }

    proptest! {
        #[test]
        fn any_string_comes_back_through_the_huffman_code(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            prop_assert!(huffman_decode(&huffman_encode(&bytes), &mut out).is_ok());
            prop_assert_eq!(out, bytes);
        }

        #[test]
        fn blocks_another_encoder_writes_decode_in_step(
            blocks in proptest::collection::vec(
                proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..12), 1..8)
        ) {
            // loona-hpack's encoder indexes every field: the dynamic table fills and evicts.
            let mut encoder = loona_hpack::Encoder::new();
            let mut decoder = Decoder::new(4096);
            for fields in blocks {
                let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
                    .into_iter()
                    .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
                    .collect();
                let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
                prop_assert_eq!(decode_all(&mut decoder, &block), Ok(fields));
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(block in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = Decoder::new(4096);
            let _ = decode_all(&mut d, &block);
        }
    }
}
