//! The two bitmap layouts: joulecut's one bit per element of the row-major tensor (LSB first,
//! `ceil(n/8)` bytes), and compressed-tensors' one packed row of bits per matrix row
//! (`numpy.packbits(mask, axis=-1, bitorder="little")`: `rows × ceil(cols/8)` bytes). They differ
//! when `cols` is not a multiple of 8. Plus the 2:4 rule of `sparse-24-bitmask`: exactly two
//! stored elements in every group of four consecutive elements of a row.

#[inline]
fn get(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (1 << (i % 8)) != 0
}

#[inline]
fn set(bits: &mut [u8], i: usize) {
    bits[i / 8] |= 1 << (i % 8);
}

/// joulecut's flat bitmap → compressed-tensors' per-row bitmask.
pub(crate) fn rows_from_flat(flat: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let stride = cols.div_ceil(8);
    let mut out = vec![0u8; rows * stride];
    for r in 0..rows {
        let row = &mut out[r * stride..(r + 1) * stride];
        for c in 0..cols {
            if get(flat, r * cols + c) {
                set(row, c);
            }
        }
    }
    out
}

/// compressed-tensors' per-row bitmask → joulecut's flat bitmap. Bits past `cols` in a row's
/// last byte must be clear (`numpy.unpackbits(count=cols)` would ignore them; joulecut refuses
/// them rather than drop data silently).
pub(crate) fn flat_from_rows(mask: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
    let stride = cols.div_ceil(8);
    if mask.len() != rows * stride {
        return Err(format!(
            "bitmask has {} bytes, expected {rows} rows × {stride}",
            mask.len()
        ));
    }
    let mut out = vec![0u8; (rows * cols).div_ceil(8)];
    for r in 0..rows {
        let row = &mask[r * stride..(r + 1) * stride];
        for c in 0..stride * 8 {
            if get(row, c) {
                if c >= cols {
                    return Err(format!("bitmask row {r} has bits set past column {cols}"));
                }
                set(&mut out, r * cols + c);
            }
        }
    }
    Ok(out)
}

/// Stored elements per row of a flat bitmap.
pub(crate) fn row_counts(flat: &[u8], rows: usize, cols: usize) -> Vec<usize> {
    (0..rows)
        .map(|r| (0..cols).filter(|&c| get(flat, r * cols + c)).count())
        .collect()
}

/// Why a flat bitmap cannot be written as 2:4 (`None` when it can: `cols` a multiple of 4 and at
/// most two stored elements in every group of four).
pub(crate) fn not_2_4(flat: &[u8], rows: usize, cols: usize) -> Option<String> {
    if cols % 4 != 0 {
        return Some(format!("{cols} columns are not a multiple of 4"));
    }
    for g in 0..rows * cols / 4 {
        let n = (0..4).filter(|&k| get(flat, g * 4 + k)).count();
        if n > 2 {
            let (r, c) = (g * 4 / cols, g * 4 % cols);
            return Some(format!(
                "row {r}, columns {c}..{}: {n} of 4 elements are non-zero",
                c + 4
            ));
        }
    }
    None
}

/// A 2:4 bitmap: `flat` with, in every group of four holding fewer than two stored elements, the
/// first unstored positions added (they hold zeros). Call only when [`not_2_4`] is `None`.
/// Returns the bitmap and the number of positions added.
pub(crate) fn pad_2_4(flat: &[u8], n: usize) -> (Vec<u8>, usize) {
    let mut out = flat.to_vec();
    let mut added = 0;
    for g in 0..n / 4 {
        let mut have = (0..4).filter(|&k| get(flat, g * 4 + k)).count();
        for k in 0..4 {
            if have >= 2 {
                break;
            }
            if !get(flat, g * 4 + k) {
                set(&mut out, g * 4 + k);
                have += 1;
                added += 1;
            }
        }
    }
    (out, added)
}

/// The stored values of `padded` (a superset of `flat`): `values` (elements of `size` bytes, in
/// `flat`'s order) with zero bytes at the added positions.
pub(crate) fn spread_values(
    flat: &[u8],
    padded: &[u8],
    n: usize,
    values: &[u8],
    size: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() + size * 8);
    let mut k = 0;
    for i in 0..n {
        if get(flat, i) {
            out.extend_from_slice(&values[k * size..(k + 1) * size]);
            k += 1;
        } else if get(padded, i) {
            out.extend(std::iter::repeat_n(0u8, size));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_of(mask: &[bool]) -> Vec<u8> {
        let mut b = vec![0u8; mask.len().div_ceil(8)];
        for (i, &m) in mask.iter().enumerate() {
            if m {
                set(&mut b, i);
            }
        }
        b
    }

    #[test]
    fn row_layout_round_trips_when_columns_are_not_a_multiple_of_8() {
        let (rows, cols) = (3, 12);
        let mask: Vec<bool> = (0..rows * cols).map(|i| (i * 7) % 5 < 2).collect();
        let flat = flat_of(&mask);
        let per_row = rows_from_flat(&flat, rows, cols);
        assert_eq!(per_row.len(), rows * 2);
        // numpy.packbits(bitorder="little") of row 1: columns 12..24 of the mask
        let mut expect = [0u8; 2];
        for c in 0..cols {
            if mask[cols + c] {
                expect[c / 8] |= 1 << (c % 8);
            }
        }
        assert_eq!(&per_row[2..4], &expect);
        assert_eq!(flat_from_rows(&per_row, rows, cols).unwrap(), flat);
        assert_eq!(
            row_counts(&flat, rows, cols),
            (0..rows)
                .map(|r| mask[r * cols..(r + 1) * cols]
                    .iter()
                    .filter(|m| **m)
                    .count())
                .collect::<Vec<_>>()
        );
        let mut bad = per_row.clone();
        bad[1] |= 0x80; // column 15 of row 0 does not exist
        assert!(flat_from_rows(&bad, rows, cols).is_err());
    }

    #[test]
    fn two_four_padding_fills_sparse_groups_with_zeros() {
        // groups: [x . . x] [. . . .] [x . . .]
        let mask = [
            true, false, false, true, false, false, false, false, true, false, false, false,
        ];
        let flat = flat_of(&mask);
        assert_eq!(not_2_4(&flat, 1, 12), None);
        let (padded, added) = pad_2_4(&flat, 12);
        assert_eq!(added, 3);
        assert_eq!(row_counts(&padded, 1, 12), vec![6]);
        let values = [1u8, 2, 3];
        assert_eq!(
            spread_values(&flat, &padded, 12, &values, 1),
            vec![1, 2, 0, 0, 3, 0]
        );
        let three = flat_of(&[true, true, true, false]);
        assert!(not_2_4(&three, 1, 4).unwrap().contains("3 of 4"));
        assert!(not_2_4(&flat, 2, 6).unwrap().contains("multiple of 4"));
    }
}
