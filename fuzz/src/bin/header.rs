//! The safetensors header and tensor table: any bytes as a checkpoint file, opened and every
//! tensor decoded. A panic (or a crash) is a finding; an error is the expected answer.

fn main() {
    let path = std::env::temp_dir().join(format!("joulecut-fuzz-header-{}", std::process::id()));
    afl::fuzz!(|data: &[u8]| {
        if std::fs::write(&path, data).is_err() {
            return;
        }
        if let Ok(ck) = joulecut_checkpoint::Checkpoint::open(&path) {
            for name in ck.names().to_vec() {
                if let Ok(t) = ck.get(&name) {
                    let _ = t.to_f32();
                }
            }
            let _ = ck.model_config();
            let _ = ck.history();
        }
    });
}
