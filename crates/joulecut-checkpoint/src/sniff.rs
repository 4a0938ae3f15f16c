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

/// The format of a file starting with `head`, if it is one joulecut knows it does not read.
pub fn foreign(head: &[u8]) -> Option<Foreign> {
    let f = |name, hint| Some(Foreign { name, hint });
    match head {
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
