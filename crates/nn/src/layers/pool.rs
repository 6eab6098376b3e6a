//! Pooling layers: `maxpool2d` is the graph's max-pooling primitive,
//! `avgpool2d` sums `unfold`'s patches; `adaptiveavgpool2d` contracts with
//! PyTorch's window-averaging matrices.

use secondo_graph::Var;
use secondo_tensor::{Tensor, Window2d};

/// `maxpool2d(K, s, p)` on `[N, C, H, W]`: the padding never wins a
/// window, as PyTorch's −∞ padding; ties go to the first maximum in
/// row-major order, as in PyTorch.
pub(crate) fn max(x: Var<'_>, kernel: usize, stride: usize, padding: usize) -> Var<'_> {
    x.max_pool(Window2d::square(kernel, stride, padding, 1))
}

/// `avgpool2d(K, s, p)` on `[N, C, H, W]`: zero padding counted in the
/// average (PyTorch's default `count_include_pad=True`).
pub(crate) fn average(x: Var<'_>, kernel: usize, stride: usize, padding: usize) -> Var<'_> {
    let p = x.unfold(Window2d::square(kernel, stride, padding, 1), 0.0);
    (p.sum(&[4, 5]) * (1.0 / (kernel * kernel) as f64)).permute(&[0, 3, 1, 2])
}

/// `adaptiveavgpool2d(S)` on `[N, C, H, W]`: output cell `i` averages input
/// rows `⌊iH/S⌋ ..< ⌈(i+1)H/S⌉` (and likewise for columns), PyTorch's
/// windows, as a contraction with a constant `[S, H]` and `[S, W]` matrix.
pub(crate) fn adaptive_average(x: Var<'_>, size: usize) -> Var<'_> {
    let b = x.builder();
    let s = x.shape();
    let rows = b.constant(window_means(size, s[2], b.dtype()));
    let cols = b.constant(window_means(size, s[3], b.dtype()));
    b.einsum("nchw,ih,jw->ncij", &[x, rows, cols])
}

/// The `[out, len]` matrix averaging PyTorch's adaptive windows.
fn window_means(out: usize, len: usize, dtype: secondo_tensor::DType) -> Tensor {
    let mut m = vec![0.0; out * len];
    for i in 0..out {
        let start = i * len / out;
        let end = ((i + 1) * len).div_ceil(out);
        for j in start..end {
            m[i * len + j] = 1.0 / (end - start) as f64;
        }
    }
    Tensor::from_f64(vec![out, len], &m, dtype).expect("out·len values")
}

#[cfg(test)]
mod tests {
    #[test]
    fn adaptive_windows_overlap_as_pytorch_s() {
        // 5 → 3: windows [0, 2), [1, 4), [3, 5).
        let m = super::window_means(3, 5, secondo_tensor::DType::F64).to_f64_vec();
        let h = 0.5;
        let t = 1.0 / 3.0;
        assert_eq!(
            m,
            vec![h, h, 0.0, 0.0, 0.0, 0.0, t, t, t, 0.0, 0.0, 0.0, 0.0, h, h]
        );
    }
}
