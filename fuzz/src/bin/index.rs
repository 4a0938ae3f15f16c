//! The sharded index (`model.safetensors.index.json`): any bytes as an index beside one valid
//! shard, opened as a source and every tensor read.

fn shard() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend(1f32.to_le_bytes());
    b.extend(2f32.to_le_bytes());
    b
}

fn main() {
    let dir = std::env::temp_dir().join(format!("joulecut-fuzz-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("model-00001-of-00001.safetensors"), shard()).expect("shard");
    let index = dir.join("model.safetensors.index.json");
    afl::fuzz!(|data: &[u8]| {
        if std::fs::write(&index, data).is_err() {
            return;
        }
        if let Ok(src) = joulecut_checkpoint::Source::open(&index) {
            for n in src.names().to_vec() {
                let _ = src.shard_of(&n).get(&n).map(|t| t.to_f32());
            }
        }
    });
}
