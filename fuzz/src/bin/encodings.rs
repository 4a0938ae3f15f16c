//! joulecut's encodings metadata (`joulecut.encodings`) and history: any text parsed, and, when
//! it parses, put in front of a small file whose tensors it then has to describe.

fn main() {
    let path = std::env::temp_dir().join(format!("joulecut-fuzz-enc-{}", std::process::id()));
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if joulecut_checkpoint::Encodings::parse(text).is_err() {
            return;
        }
        let meta = serde_json::json!({ "joulecut.encodings": text, "joulecut.history": text });
        let header = serde_json::json!({
            "__metadata__": meta,
            "w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]},
            "w:scale": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            "w:bitmap": {"dtype": "U8", "shape": [1], "data_offsets": [8, 9]},
            "w:values": {"dtype": "F32", "shape": [1], "data_offsets": [9, 13]},
        })
        .to_string();
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.extend(0.5f32.to_le_bytes());
        b.push(0b101);
        b.extend(1f32.to_le_bytes());
        if std::fs::write(&path, b).is_ok() {
            if let Ok(ck) = joulecut_checkpoint::Checkpoint::open(&path) {
                for n in ck.names().to_vec() {
                    let _ = ck.get(&n).map(|t| t.to_f32());
                }
            }
        }
    });
}
