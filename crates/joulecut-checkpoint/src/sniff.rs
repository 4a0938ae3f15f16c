//! Recognising the model formats joulecut does not read, from their first bytes, so that a GGUF
//! or a PyTorch file is named as such instead of failing as an "implausible header length".

/// A model file format that is not safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    /// What the file is.
    pub name: &'static str,
    /// What to do with it.
    pub hint: &'static str,
}

const PYTORCH_HINT: &str = "convert it in Python: `from safetensors.torch import save_file; save_file(torch.load(F), 'model.safetensors')`, or use the model's `model.safetensors` from the Hugging Face hub";

/// Whether `file` opens like a safetensors file: an 8-byte header length that fits the file,
/// then the header's `{`. Checked first, because a header length can begin with another format's
/// magic bytes: 640, 896, 1152 or 1408 bytes start `80 02..05` (a pickle's), 35,615 `1f 8b`
/// (gzip's).
fn safetensors_like(file: &[u8]) -> bool {
    let Some(len) = file.get(..8) else {
        return false;
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    n >= 2 && n <= (file.len() - 8) as u64 && file.get(8) == Some(&b'{')
}

/// The format of a file whose bytes are `file` (its first bytes decide; the length check needs
/// the whole of it), if it is one joulecut knows it does not read.
pub fn foreign(file: &[u8]) -> Option<Foreign> {
    if safetensors_like(file) {
        return None;
    }
    let f = |name, hint| Some(Foreign { name, hint });
    match file {
        [b'G', b'G', b'U', b'F', ..] => f(
            "a GGUF file (llama.cpp)",
            "joulecut reads safetensors; GGUF weights are already quantized for llama.cpp: compress the original safetensors checkpoint instead",
        ),
        [b'P', b'K', 3, 4, ..] => f("a zip archive (PyTorch's .pt/.bin format)", PYTORCH_HINT),
        [0x80, 2..=5, ..] => f("a Python pickle (an old PyTorch .bin)", PYTORCH_HINT),
        [0x93, b'N', b'U', b'M', b'P', b'Y', ..] => f(
            "a NumPy .npy array",
            "save the arrays with `safetensors.numpy.save_file`",
        ),
        [0x89, b'H', b'D', b'F', ..] => f(
            "an HDF5 file (Keras .h5)",
            "export the model's weights to safetensors first",
        ),
        [0x1f, 0x8b, ..] => f(
            "gzip-compressed",
            "decompress it first (`gunzip`); joulecut reads safetensors files as they are",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file whose header length happens to start with a pickle's or gzip's magic
    /// bytes is still safetensors (found with a 1,152-byte header: `80 04 ...`).
    #[test]
    fn header_lengths_that_look_like_magic_are_safetensors() {
        for n in [0x280u64, 0x380, 0x480, 0x580, 0x8b1f] {
            let mut file = n.to_le_bytes().to_vec();
            file.push(b'{');
            file.resize(8 + n as usize, b' ');
            assert_eq!(foreign(&file), None, "header length {n}");
            // the same first bytes without a header behind them are the foreign format
            assert!(
                foreign(&file[..12]).is_some(),
                "header length {n}, truncated"
            );
        }
    }

    #[test]
    fn knows_the_usual_suspects_and_nothing_else() {
        assert!(foreign(b"GGUF\x03\0\0\0").unwrap().name.contains("GGUF"));
        assert!(foreign(b"PK\x03\x04rest").unwrap().name.contains("PyTorch"));
        assert!(
            foreign(&[0x80, 0x02, 0x8a])
                .unwrap()
                .name
                .contains("pickle")
        );
        assert!(foreign(b"\x93NUMPY\x01\0").is_some());
        assert!(foreign(&[0x1f, 0x8b, 8]).is_some());
        // a safetensors file starts with a small little-endian length
        assert_eq!(foreign(&[0x40, 0, 0, 0, 0, 0, 0, 0, b'{']), None);
        assert_eq!(foreign(b""), None);
    }
}
