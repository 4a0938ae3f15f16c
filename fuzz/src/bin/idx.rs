//! IDX datasets (MNIST layout, raw or gzip): any bytes cut at `--idx--` into the four files of a
//! dataset directory (training images and labels, test images and labels), loaded whole.

const CUT: &[u8] = b"--idx--";
const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(CUT.len()).position(|w| w == CUT) {
        out.push(&rest[..i]);
        rest = &rest[i + CUT.len()..];
    }
    out.push(rest);
    out
}

fn main() {
    let dir = std::env::temp_dir().join(format!("joulecut-fuzz-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    afl::fuzz!(|data: &[u8]| {
        let p = parts(data);
        // one part alone goes through the file parser; four make a dataset directory
        if p.len() == 1 {
            let _ = joulecut_harness::data::parse_idx(data.to_vec());
            return;
        }
        if p.len() != 4 {
            return;
        }
        for (name, bytes) in FILES.iter().zip(&p) {
            if std::fs::write(dir.join(name), bytes).is_err() {
                return;
            }
        }
        if let Ok(s) = joulecut_harness::data::load_mnist_dir(&dir) {
            let _ = (s.train.take(3), s.test.len());
        }
    });
}
