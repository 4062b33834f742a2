//! Image flows: `image.phash` (DCT perceptual hash, on candle), `image.color_hist` (RGB
//! joint histogram), and `image.hamming` / `image.near_duplicate` over two hashes.
//!
//! Images arrive as `bytes` inputs holding a PNG or JPEG file. Bytes that do not decode
//! fail only their own item, with a permanent error naming the problem. Decoding uses the
//! `image` crate's default limits (it refuses images that would need more than 512 MiB).
//!
//! Comparing two images is a feature of a *pair*: model the pair as its own entity type
//! whose requests carry both images as request inputs `a` and `b`, hash each, and compare
//! the hashes. Each hash is cached on its own, so a pair that shares an image with another
//! pair still hashes that image once per pair entity, and a changed `max_distance` reuses
//! both hashes:
//!
//! ```toml
//! [[feature]]
//! name = "pair.hash_a"
//! entity_type = "pair"
//! flow = "image.phash@1"
//! ttl = "1d"
//! inputs = { image = { request = "a" } }
//!
//! [[feature]]
//! name = "pair.hash_b"
//! entity_type = "pair"
//! flow = "image.phash@1"
//! ttl = "1d"
//! inputs = { image = { request = "b" } }
//!
//! [[feature]]
//! name = "pair.near_duplicate"
//! entity_type = "pair"
//! flow = "image.near_duplicate@1"
//! ttl = "1d"
//! params = { max_distance = "10" }
//! inputs = { a = { feature = "pair.hash_a" }, b = { feature = "pair.hash_b" } }
//! ```
//!
//! `image.hamming@1` over the same two hashes gives the distance itself.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use ::image::DynamicImage;
use ::image::imageops::{self, FilterType};
use candle_core::{DType, Device, Tensor};

use super::{SpecBuilder, input, param};
use crate::{Error, Flow, FlowInput, FlowSpec, Params, Value, ValueType};

/// Side of the grayscale thumbnail the DCT runs on.
const SIDE: usize = 32;
/// Side of the low-frequency block the hash keeps.
const LOW: usize = 8;
/// Bits in a hash: the `LOW` × `LOW` block.
const BITS: usize = LOW * LOW;

/// The input `image` as bytes, or a permanent error saying what was sent instead.
fn image_bytes(item: &FlowInput) -> Result<&[u8], Error> {
    match item.value("image")? {
        Value::Bytes(b) => Ok(b),
        other => Err(Error::Permanent(format!(
            "input `image` must be bytes holding a PNG or JPEG file, got a {} value",
            other.value_type()
        ))),
    }
}

/// Decodes PNG or JPEG bytes, refusing empty, undecodable and zero-sized images.
fn decode(bytes: &[u8]) -> Result<DynamicImage, Error> {
    if bytes.is_empty() {
        return Err(Error::Permanent(
            "input `image` is empty; pass the bytes of a PNG or JPEG file".to_string(),
        ));
    }
    let img = ::image::load_from_memory(bytes).map_err(|e| {
        Error::Permanent(format!(
            "input `image` could not be decoded as PNG or JPEG ({} bytes): {e}",
            bytes.len()
        ))
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Permanent(
            "input `image` has no pixels; pass a non-empty image".to_string(),
        ));
    }
    Ok(img)
}

/// The `n` × `n` orthonormal DCT-II matrix, row-major: `D[k][i] = c(k) cos(π (2i+1) k / 2n)`
/// with `c(0) = √(1/n)` and `c(k) = √(2/n)`, so that `D · X · Dᵀ` is the 2-D DCT of `X`.
fn dct_matrix(n: usize) -> Vec<f32> {
    let nf = n as f64;
    (0..n)
        .flat_map(|k| {
            let c = if k == 0 {
                (1.0 / nf).sqrt()
            } else {
                (2.0 / nf).sqrt()
            };
            (0..n)
                .map(move |i| (c * (PI * (2 * i + 1) as f64 * k as f64 / (2.0 * nf)).cos()) as f32)
        })
        .collect()
}

/// DCT-based perceptual hash of an image: 64 bits as a tensor [64] of 0.0 and 1.0.
///
/// The image is converted to grayscale (luma in [0, 1]), resized to 32 × 32 with a
/// triangle (bilinear, area-aware when shrinking) filter, and transformed with the 2-D
/// DCT-II as `D · X · Dᵀ` on candle, for the whole batch at once. Only the top-left 8 × 8
/// (lowest-frequency) coefficients are kept, so only the first 8 rows of `D` are
/// multiplied: `D₈ · X · D₈ᵀ` is exactly that block of `D · X · Dᵀ`.
///
/// Bit `8·k + l` is coefficient `[k][l]` (k: vertical frequency, l: horizontal) greater
/// than the median of the 63 AC coefficients. The DC term `[0][0]` (the mean brightness)
/// is left out of the median, so that it does not shift the threshold; its own bit is
/// still emitted and is 1 for any image that is not uniformly black, so it carries almost
/// no information (two hashes differ in at most 63 informative bits). With 63 values the
/// median is one of them, the 32nd smallest; exactly 31 AC bits are 1 unless there are ties
/// (e.g. a flat image, whose AC coefficients are all ~0).
#[derive(Debug)]
pub struct PHash {
    spec: FlowSpec,
    /// The first `LOW` rows of the DCT matrix [8, 32] and their transpose [32, 8], built
    /// once. Building a CPU tensor of the right length cannot fail; if it ever did, every
    /// batch reports the error instead of panicking.
    dct: Result<(Tensor, Tensor), Error>,
}

impl PHash {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "image.phash",
            1,
            ValueType::Tensor,
            "DCT perceptual hash of a PNG or JPEG image: tensor [64] of 0/1 bits",
        )
        .input(input("image", ValueType::Bytes))
        .build();
        let dct = Self::low_dct();
        PHash { spec, dct }
    }

    fn low_dct() -> Result<(Tensor, Tensor), Error> {
        let d = Tensor::from_vec(dct_matrix(SIDE), (SIDE, SIDE), &Device::Cpu)?;
        let low = d.narrow(0, 0, LOW)?.contiguous()?;
        let low_t = low.t()?.contiguous()?;
        Ok((low, low_t))
    }

    /// Hashes a batch of 32 × 32 grayscale thumbnails (each 1024 values, row-major).
    fn hash_batch(&self, thumbs: &[Vec<f32>]) -> Result<Vec<Value>, Error> {
        let n = thumbs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (d, d_t) = self.dct.as_ref().map_err(Clone::clone)?;
        let data: Vec<f32> = thumbs.iter().flatten().copied().collect();
        let x = Tensor::from_vec(data, (n, SIDE, SIDE), &Device::Cpu)?;
        // [8, 32] · [n, 32, 32] · [32, 8] -> [n, 8, 8]
        let coeffs = d.broadcast_matmul(&x)?.broadcast_matmul(d_t)?;
        let flat = coeffs.reshape((n, BITS))?;
        let (sorted_ac, _) = flat
            .narrow(1, 1, BITS - 1)?
            .contiguous()?
            .sort_last_dim(true)?;
        let median = sorted_ac.narrow(1, (BITS - 1) / 2, 1)?;
        let bits = flat.broadcast_gt(&median)?.to_dtype(DType::F32)?;
        (0..n).map(|i| Ok(Value::Tensor(bits.get(i)?))).collect()
    }
}

impl Default for PHash {
    fn default() -> Self {
        Self::new()
    }
}

/// The 32 × 32 grayscale thumbnail of an item's image, luma in [0, 1].
fn thumbnail(item: &FlowInput) -> Result<Vec<f32>, Error> {
    let img = decode(image_bytes(item)?)?;
    let gray = img.to_luma32f();
    let small = imageops::resize(&gray, SIDE as u32, SIDE as u32, FilterType::Triangle);
    Ok(small.into_raw())
}

/// Places the results computed for the `Ok` items back among the per-item errors.
fn merge<T>(
    parsed: Vec<Result<T, Error>>,
    computed: Result<Vec<Value>, Error>,
) -> Vec<Result<Value, Error>> {
    let computed = match computed {
        Ok(values) => values,
        Err(e) => return parsed.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut computed = computed.into_iter();
    parsed
        .into_iter()
        .map(|p| {
            p?;
            computed
                .next()
                .ok_or_else(|| Error::Permanent("batch result is short".to_string()))
        })
        .collect()
}

impl Flow for PHash {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let parsed: Vec<Result<Vec<f32>, Error>> = batch.iter().map(thumbnail).collect();
        let ok: Vec<Vec<f32>> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let computed = self.hash_batch(&ok);
        merge(parsed, computed)
    }
}

/// Default and allowed range of `image.color_hist`'s `bins`.
const DEFAULT_BINS: u64 = 4;
const MAX_BINS: u64 = 16;

fn bins_param(params: &Params) -> Result<usize, Error> {
    let bins = params.u64_or("bins", DEFAULT_BINS)?;
    if !(1..=MAX_BINS).contains(&bins) {
        return Err(Error::Permanent(format!(
            "param `bins` = `{bins}` must be a whole number from 1 to {MAX_BINS} \
             (bins per channel; the histogram has bins³ cells)"
        )));
    }
    Ok(bins as usize)
}

/// Joint RGB histogram of an image: tensor [bins³] of pixel fractions, summing to 1.
///
/// Each channel (0..=255) is split into `bins` equal ranges; cell
/// `r_bin·bins² + g_bin·bins + b_bin` holds the fraction of pixels in it. Alpha is ignored
/// (a transparent pixel counts with its colour). Counting is a scatter over the decoded
/// pixels, done in one pass over the buffer (a candle scatter would first copy every pixel
/// into index tensors, for no gain on the CPU); the normalisation runs on candle for all
/// items with the same `bins` at once.
#[derive(Debug)]
pub struct ColorHist {
    spec: FlowSpec,
}

impl ColorHist {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "image.color_hist",
            1,
            ValueType::Tensor,
            "joint RGB histogram of a PNG or JPEG image: tensor [bins³] summing to 1",
        )
        .input(input("image", ValueType::Bytes))
        .param(param(
            "bins",
            Some("4"),
            "bins per channel, 1 to 16; the output has bins³ cells, red-major",
        ))
        .build();
        ColorHist { spec }
    }
}

impl Default for ColorHist {
    fn default() -> Self {
        Self::new()
    }
}

/// Pixel counts of an item's image, with its `bins`.
fn color_counts(item: &FlowInput) -> Result<(usize, Vec<f64>), Error> {
    let bins = bins_param(&item.params)?;
    let rgb = decode(image_bytes(item)?)?.to_rgb8();
    let mut counts = vec![0.0f64; bins * bins * bins];
    let bin = |c: u8| (usize::from(c) * bins) >> 8;
    for px in rgb.as_raw().chunks_exact(3) {
        if let [r, g, b] = px
            && let Some(cell) = counts.get_mut((bin(*r) * bins + bin(*g)) * bins + bin(*b))
        {
            *cell += 1.0;
        }
    }
    Ok((bins, counts))
}

impl Flow for ColorHist {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        bins_param(params).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let parsed: Vec<Result<(usize, Vec<f64>), Error>> =
            batch.iter().map(color_counts).collect();
        let mut out: Vec<Result<Value, Error>> = parsed
            .iter()
            .map(|p| match p {
                Ok(_) => Err(Error::Permanent("item was not computed".to_string())),
                Err(e) => Err(e.clone()),
            })
            .collect();
        // Items grouped by `bins`, so that each group is one [g, bins³] matrix.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, p) in parsed.iter().enumerate() {
            if let Ok((bins, _)) = p {
                groups.entry(*bins).or_default().push(i);
            }
        }
        for (bins, idx) in groups {
            let cells = bins * bins * bins;
            let data: Vec<f64> = idx
                .iter()
                .filter_map(|i| parsed.get(*i).and_then(|p| p.as_ref().ok()))
                .flat_map(|(_, c)| c.iter().copied())
                .collect();
            let result = normalise_rows(data, idx.len(), cells);
            match result {
                Ok(values) => {
                    for (i, v) in idx.into_iter().zip(values) {
                        out[i] = Ok(v);
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }
}

/// Divides each row of a [rows, cols] count matrix by its sum, as f32 tensors [cols].
fn normalise_rows(data: Vec<f64>, rows: usize, cols: usize) -> Result<Vec<Value>, Error> {
    let counts = Tensor::from_vec(data, (rows, cols), &Device::Cpu)?;
    let totals = counts.sum_keepdim(1)?;
    let hist = counts.broadcast_div(&totals)?.to_dtype(DType::F32)?;
    (0..rows).map(|i| Ok(Value::Tensor(hist.get(i)?))).collect()
}

/// Number of differing bits between two hashes.
#[derive(Debug)]
pub struct Hamming {
    spec: FlowSpec,
}

impl Hamming {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "image.hamming",
            1,
            ValueType::F64,
            "number of differing bits between two image hashes (0/1 tensors of one shape)",
        )
        .input(input("a", ValueType::Tensor))
        .input(input("b", ValueType::Tensor))
        .build();
        Hamming { spec }
    }
}

impl Default for Hamming {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether two hashes are at most `max_distance` bits apart.
#[derive(Debug)]
pub struct NearDuplicate {
    spec: FlowSpec,
}

impl NearDuplicate {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "image.near_duplicate",
            1,
            ValueType::Bool,
            "whether two image hashes differ in at most max_distance bits",
        )
        .input(input("a", ValueType::Tensor))
        .input(input("b", ValueType::Tensor))
        .param(param(
            "max_distance",
            Some("10"),
            "largest number of differing bits (a whole number from 0) that still counts \
             as a near duplicate; 10 of 64 suits image.phash",
        ))
        .build();
        NearDuplicate { spec }
    }
}

impl Default for NearDuplicate {
    fn default() -> Self {
        Self::new()
    }
}

/// Refuses a hash value that is not a bit.
fn check_bits(name: &str, values: &[f32]) -> Result<(), Error> {
    match values
        .iter()
        .enumerate()
        .find(|(_, v)| **v != 0.0 && **v != 1.0)
    {
        None => Ok(()),
        Some((i, v)) => Err(Error::Permanent(format!(
            "input `{name}` holds {v} at index {i}; a hash holds only 0 and 1 \
             (pass the output of image.phash@1)"
        ))),
    }
}

/// Two hashes, flattened.
type HashPair = (Vec<f32>, Vec<f32>);

/// The two hashes of an item, flattened, checked to be bit tensors of one shape.
fn hash_pair(item: &FlowInput) -> Result<HashPair, Error> {
    let (sa, a) = Value::tensor_parts(item.value("a")?.as_tensor()?)?;
    let (sb, b) = Value::tensor_parts(item.value("b")?.as_tensor()?)?;
    if sa != sb {
        return Err(Error::Permanent(format!(
            "inputs `a` {sa:?} and `b` {sb:?} must have the same shape; \
             compare two hashes from the same flow"
        )));
    }
    if a.is_empty() {
        return Err(Error::Permanent(
            "inputs `a` and `b` are empty tensors; pass hashes from image.phash@1".to_string(),
        ));
    }
    check_bits("a", &a)?;
    check_bits("b", &b)?;
    Ok((a, b))
}

/// Hamming distances for a batch, computed on candle per group of hashes of one length.
fn distances(batch: &[FlowInput]) -> Vec<Result<f64, Error>> {
    let pairs: Vec<Result<HashPair, Error>> = batch.iter().map(hash_pair).collect();
    let mut out: Vec<Result<f64, Error>> = pairs
        .iter()
        .map(|p| match p {
            Ok(_) => Err(Error::Permanent("item was not computed".to_string())),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if let Ok((a, _)) = p {
            groups.entry(a.len()).or_default().push(i);
        }
    }
    for (len, idx) in groups {
        let mut a_rows = Vec::with_capacity(idx.len() * len);
        let mut b_rows = Vec::with_capacity(idx.len() * len);
        for i in &idx {
            if let Some(Ok((a, b))) = pairs.get(*i) {
                a_rows.extend_from_slice(a);
                b_rows.extend_from_slice(b);
            }
        }
        let rows = idx.len();
        let result = (|| -> Result<Vec<f32>, Error> {
            let a = Tensor::from_vec(a_rows, (rows, len), &Device::Cpu)?;
            let b = Tensor::from_vec(b_rows, (rows, len), &Device::Cpu)?;
            Ok(a.ne(&b)?.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?)
        })();
        match result {
            Ok(d) => {
                for (i, d) in idx.into_iter().zip(d) {
                    out[i] = Ok(f64::from(d));
                }
            }
            Err(e) => {
                for i in idx {
                    out[i] = Err(e.clone());
                }
            }
        }
    }
    out
}

fn max_distance_param(params: &Params) -> Result<u64, Error> {
    params.u64_or("max_distance", 10).map_err(|_| {
        Error::Permanent(format!(
            "param `max_distance` = `{}` must be a whole number from 0 (bits; 10 suits \
             image.phash)",
            params.get("max_distance").unwrap_or_default()
        ))
    })
}

impl Flow for Hamming {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        distances(batch)
            .into_iter()
            .map(|d| d.map(Value::F64))
            .collect()
    }
}

impl Flow for NearDuplicate {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        max_distance_param(params).map(|_| ())
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        distances(batch)
            .into_iter()
            .zip(batch)
            .map(|(d, item)| {
                let max = max_distance_param(&item.params)?;
                Ok(Value::Bool(d? <= max as f64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::codecs::png::PngEncoder;
    use ::image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

    use super::*;
    use crate::builtin::testing::item;

    /// Scene A: a warm horizontal gradient, a bright disc upper left, a dark box lower
    /// right. Drawn in relative coordinates, so any size shows the same scene.
    fn scene_a(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let (du, dv) = ((u - 0.3) * w as f32 / h as f32, v - 0.4);
            if du * du + dv * dv < 0.2 * 0.2 {
                Rgb([240, 240, 230])
            } else if (0.6..0.9).contains(&u) && (0.55..0.85).contains(&v) {
                Rgb([20, 20, 80])
            } else {
                Rgb([(40.0 + 200.0 * u) as u8, (128.0 * v) as u8, 60])
            }
        })
    }

    /// Scene B: a cool vertical gradient bright at the bottom, broad diagonal bands, a
    /// dark disc upper right and a bright bar along the left edge.
    fn scene_b(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let (du, dv) = ((u - 0.75) * w as f32 / h as f32, v - 0.3);
            if du * du + dv * dv < 0.18 * 0.18 {
                Rgb([10, 10, 10])
            } else if u < 0.12 {
                Rgb([250, 250, 250])
            } else {
                let band = if ((u + v) * 2.0).fract() < 0.5 {
                    70.0
                } else {
                    0.0
                };
                let g = (30.0 + 150.0 * v + band) as u8;
                Rgb([20, g, (60.0 + 150.0 * v) as u8])
            }
        })
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut buf = Vec::new();
        PngEncoder::new(&mut buf)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                ExtendedColorType::Rgb8,
            )
            .expect("png encodes");
        buf
    }

    fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        JpegEncoder::new_with_quality(&mut buf, quality)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                ExtendedColorType::Rgb8,
            )
            .expect("jpeg encodes");
        buf
    }

    fn image_item(bytes: Vec<u8>) -> FlowInput {
        item(&[("image", Value::Bytes(bytes))], &[])
    }

    fn tensor_of(v: &Result<Value, Error>) -> (Vec<usize>, Vec<f32>) {
        let t = v
            .as_ref()
            .ok()
            .and_then(|v| v.as_tensor().ok())
            .expect("a tensor value");
        Value::tensor_parts(t).expect("tensor parts")
    }

    fn hamming(a: &[f32], b: &[f32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn dct_matrix_is_orthonormal_and_matches_the_definition() {
        let (d, d_t) = PHash::low_dct().expect("dct");
        let eye = d
            .matmul(&d_t)
            .expect("matmul")
            .to_vec2::<f32>()
            .expect("vec");
        for (i, row) in eye.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-5, "D·Dᵀ[{i}][{j}] = {v}");
            }
        }
        // One thumbnail through the batched path against the textbook double sum.
        let x: Vec<f32> = (0..SIDE * SIDE)
            .map(|i| ((i * 37 % 101) as f32) / 100.0)
            .collect();
        let n = SIDE as f64;
        let naive = |k: usize, l: usize| {
            let c = |k: usize| {
                if k == 0 {
                    (1.0 / n).sqrt()
                } else {
                    (2.0 / n).sqrt()
                }
            };
            let mut s = 0.0;
            for r in 0..SIDE {
                for col in 0..SIDE {
                    s += f64::from(x[r * SIDE + col])
                        * (PI * (2 * r + 1) as f64 * k as f64 / (2.0 * n)).cos()
                        * (PI * (2 * col + 1) as f64 * l as f64 / (2.0 * n)).cos();
                }
            }
            c(k) * c(l) * s
        };
        let t = Tensor::from_vec(x.clone(), (1, SIDE, SIDE), &Device::Cpu).expect("tensor");
        let got = d
            .broadcast_matmul(&t)
            .and_then(|y| y.broadcast_matmul(&d_t))
            .and_then(|y| y.flatten_all())
            .and_then(|y| y.to_vec1::<f32>())
            .expect("dct");
        for k in 0..LOW {
            for l in 0..LOW {
                let want = naive(k, l);
                let have = f64::from(got[k * LOW + l]);
                assert!((have - want).abs() < 1e-4, "[{k}][{l}]: {have} vs {want}");
            }
        }
    }

    #[test]
    fn phash_is_near_for_resized_jpeg_and_far_for_another_scene() {
        let a = scene_a(256, 192);
        let small = imageops::resize(&a, 128, 96, FilterType::Triangle);
        let b = scene_b(256, 192);
        let out = PHash::new().run(&[
            image_item(png(&a)),
            image_item(jpeg(&a, 75)),
            image_item(jpeg(&small, 75)),
            image_item(png(&b)),
            image_item(jpeg(&b, 75)),
        ]);
        let hashes: Vec<Vec<f32>> = out
            .iter()
            .map(|r| {
                let (shape, bits) = tensor_of(r);
                assert_eq!(shape, vec![BITS]);
                assert!(bits.iter().all(|b| *b == 0.0 || *b == 1.0));
                bits
            })
            .collect();
        let png_vs_jpeg = hamming(&hashes[0], &hashes[1]);
        let png_vs_small_jpeg = hamming(&hashes[0], &hashes[2]);
        let a_vs_b = hamming(&hashes[0], &hashes[3]);
        let a_vs_b_jpeg = hamming(&hashes[2], &hashes[4]);
        eprintln!(
            "phash distances: png/jpeg {png_vs_jpeg}, png/resized jpeg {png_vs_small_jpeg}, \
             a/b {a_vs_b}, resized a jpeg/b jpeg {a_vs_b_jpeg}"
        );
        assert!(png_vs_jpeg <= 10, "png vs jpeg: {png_vs_jpeg}");
        assert!(
            png_vs_small_jpeg <= 10,
            "png vs resized jpeg: {png_vs_small_jpeg}"
        );
        assert!(a_vs_b > 20, "scene a vs scene b: {a_vs_b}");
        assert!(
            a_vs_b_jpeg > 20,
            "scene a vs scene b as jpeg: {a_vs_b_jpeg}"
        );
        // The DC bit is set and, with the median over the 63 AC terms, 31 AC bits are.
        for h in &hashes {
            assert_eq!(h[0], 1.0);
            assert_eq!(h[1..].iter().filter(|b| **b == 1.0).count(), 31);
        }

        // The same comparisons through the flows.
        let pair = |i: usize, j: usize, max: &str| {
            item(
                &[
                    ("a", out[i].clone().expect("hash")),
                    ("b", out[j].clone().expect("hash")),
                ],
                &[("max_distance", max)],
            )
        };
        let d = Hamming::new().run(&[
            item(
                &[
                    ("a", out[0].clone().expect("hash")),
                    ("b", out[2].clone().expect("hash")),
                ],
                &[],
            ),
            item(
                &[
                    ("a", out[0].clone().expect("hash")),
                    ("b", out[3].clone().expect("hash")),
                ],
                &[],
            ),
        ]);
        assert_eq!(
            d[0].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(png_vs_small_jpeg as f64)
        );
        assert_eq!(
            d[1].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(a_vs_b as f64)
        );
        let near =
            NearDuplicate::new().run(&[pair(0, 2, "10"), pair(0, 3, "10"), pair(0, 3, "64")]);
        let flags: Vec<Option<bool>> = near
            .iter()
            .map(|r| match r {
                Ok(Value::Bool(b)) => Some(*b),
                _ => None,
            })
            .collect();
        assert_eq!(flags, vec![Some(true), Some(false), Some(true)]);
    }

    #[test]
    fn undecodable_bytes_fail_only_their_item() {
        let a = scene_a(64, 48);
        let out = PHash::new().run(&[
            image_item(png(&a)),
            image_item(b"definitely not an image".to_vec()),
            image_item(Vec::new()),
            item(&[("image", Value::String("a.png".into()))], &[]),
            image_item(jpeg(&a, 90)),
        ]);
        assert!(out[0].is_ok(), "{:?}", out[0]);
        assert!(
            matches!(&out[1], Err(Error::Permanent(m)) if m.contains("could not be decoded")),
            "{:?}",
            out[1]
        );
        assert!(matches!(&out[2], Err(Error::Permanent(m)) if m.contains("is empty")));
        assert!(matches!(&out[3], Err(Error::Permanent(m)) if m.contains("must be bytes")));
        assert!(out[4].is_ok());

        let out = ColorHist::new().run(&[
            image_item(vec![0x89, b'P', b'N', b'G', 1, 2, 3]),
            image_item(png(&a)),
        ]);
        assert!(matches!(&out[0], Err(Error::Permanent(m)) if m.contains("could not be decoded")));
        assert!(out[1].is_ok());
    }

    #[test]
    fn color_hist_sums_to_one_and_tells_red_from_blue() {
        let red = RgbImage::from_fn(96, 64, |x, y| {
            Rgb([(150 + x % 100) as u8, (y % 40) as u8, (x % 30) as u8])
        });
        let blue = RgbImage::from_fn(96, 64, |x, y| {
            Rgb([(x % 30) as u8, (y % 40) as u8, (150 + x % 100) as u8])
        });
        let with_bins =
            |bytes: Vec<u8>, bins: &str| item(&[("image", Value::Bytes(bytes))], &[("bins", bins)]);
        let out = ColorHist::new().run(&[
            image_item(png(&red)),
            image_item(jpeg(&blue, 75)),
            with_bins(png(&red), "2"),
            with_bins(png(&red), "0"),
        ]);
        let (shape_r, hr) = tensor_of(&out[0]);
        let (shape_b, hb) = tensor_of(&out[1]);
        assert_eq!(shape_r, vec![64]);
        assert_eq!(shape_b, vec![64]);
        for h in [&hr, &hb] {
            let sum: f32 = h.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
            assert!(h.iter().all(|v| *v >= 0.0));
        }
        // Mass with red in the upper half (r_bin ≥ 2) vs blue in the upper half (b_bin ≥ 2).
        let red_mass = |h: &[f32]| h[32..].iter().sum::<f32>();
        let blue_mass = |h: &[f32]| {
            h.iter()
                .enumerate()
                .filter(|(i, _)| i % 4 >= 2)
                .map(|(_, v)| v)
                .sum::<f32>()
        };
        assert!(red_mass(&hr) > 0.99 && blue_mass(&hr) < 0.01);
        assert!(blue_mass(&hb) > 0.9 && red_mass(&hb) < 0.1);
        let l1: f32 = hr.iter().zip(&hb).map(|(a, b)| (a - b).abs()).sum();
        assert!(l1 > 1.8, "l1 {l1}");

        // Two bins per channel: every pixel is in the red-high, green-low, blue-low cell.
        let (shape2, h2) = tensor_of(&out[2]);
        assert_eq!(shape2, vec![8]);
        assert!((h2[4] - 1.0).abs() < 1e-6, "{h2:?}");
        assert!(matches!(&out[3], Err(Error::Permanent(m)) if m.contains("from 1 to 16")));
    }

    #[test]
    fn params_are_checked_at_registration() {
        let p = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
        let hist = ColorHist::new();
        assert!(hist.check_params(&Params::default()).is_ok());
        assert!(hist.check_params(&p("bins", "16")).is_ok());
        assert!(hist.check_params(&p("bins", "17")).is_err());
        assert!(hist.check_params(&p("bins", "0")).is_err());
        assert!(hist.check_params(&p("bins", "four")).is_err());
        let near = NearDuplicate::new();
        assert!(near.check_params(&p("max_distance", "0")).is_ok());
        assert!(near.check_params(&p("max_distance", "-1")).is_err());
        assert!(near.check_params(&p("max_distance", "2.5")).is_err());
        assert!(near.check_params(&p("distance", "3")).is_err());
        assert!(PHash::new().check_params(&p("bins", "3")).is_err());
    }

    #[test]
    fn hamming_refuses_what_is_not_a_pair_of_hashes() {
        let t = |v: &[f32]| Value::tensor(v.to_vec(), &[v.len()]).expect("tensor");
        let out = Hamming::new().run(&[
            item(
                &[("a", t(&[1.0, 0.0, 1.0])), ("b", t(&[0.0, 0.0, 0.0]))],
                &[],
            ),
            item(&[("a", t(&[1.0, 0.0])), ("b", t(&[1.0, 0.0, 1.0]))], &[]),
            item(&[("a", t(&[0.5, 0.0])), ("b", t(&[1.0, 0.0]))], &[]),
            item(&[("a", t(&[1.0, 1.0])), ("b", t(&[0.0, 1.0]))], &[]),
        ]);
        assert_eq!(
            out[0].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(2.0)
        );
        assert!(matches!(&out[1], Err(Error::Permanent(m)) if m.contains("same shape")));
        assert!(matches!(&out[2], Err(Error::Permanent(m)) if m.contains("only 0 and 1")));
        assert_eq!(
            out[3].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(1.0)
        );
    }
}
