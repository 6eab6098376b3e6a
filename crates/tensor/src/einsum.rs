use std::fmt;

use rayon::prelude::*;

use crate::gemm_kernel::{gemm_into, gram_into, Strided};
use crate::shape::contiguous_strides;

use crate::{ReduceOp, Tensor, TensorError};

/// A parsed einsum specification with an explicit output, e.g. `"ni,oi->no"`.
///
/// Each operand names every axis with one letter; a letter appears at most once
/// per operand and in the output; output letters must appear in some operand.
///
/// ```
/// use secondo_tensor::EinsumSpec;
/// let s: EinsumSpec = "ni,oi->no".parse().unwrap();
/// assert_eq!(s.output_shape(&[&[8, 3], &[5, 3]]).unwrap(), vec![8, 5]);
/// assert_eq!(s.to_string(), "ni,oi->no");
/// assert!("ii->i".parse::<EinsumSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EinsumSpec {
    /// The letters of each operand.
    pub inputs: Vec<Vec<char>>,
    /// The letters of the result.
    pub output: Vec<char>,
}

impl std::str::FromStr for EinsumSpec {
    type Err = TensorError;
    fn from_str(s: &str) -> Result<Self, TensorError> {
        let err = |reason: &str| TensorError::Einsum {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (lhs, rhs) = s.split_once("->").ok_or_else(|| err("missing '->'"))?;
        let parse_term = |t: &str| -> Result<Vec<char>, TensorError> {
            let letters: Vec<char> = t.trim().chars().collect();
            if let Some(c) = letters.iter().find(|c| !c.is_ascii_alphabetic()) {
                return Err(err(&format!("'{c}' is not an axis letter")));
            }
            let mut sorted = letters.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(err("an axis letter repeats within one term"));
            }
            Ok(letters)
        };
        let inputs = lhs
            .split(',')
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()?;
        let output = parse_term(rhs)?;
        if let Some(c) = output
            .iter()
            .find(|c| !inputs.iter().any(|i| i.contains(c)))
        {
            return Err(err(&format!("output axis '{c}' appears in no operand")));
        }
        Ok(EinsumSpec { inputs, output })
    }
}

impl fmt::Display for EinsumSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self.inputs.iter().map(|t| t.iter().collect()).collect();
        write!(
            f,
            "{}->{}",
            terms.join(","),
            self.output.iter().collect::<String>()
        )
    }
}

impl EinsumSpec {
    /// Size of every letter, checking operand ranks and consistent sizes.
    ///
    /// ```
    /// use secondo_tensor::EinsumSpec;
    /// let s: EinsumSpec = "ij,jk->ik".parse().unwrap();
    /// assert!(s.sizes(&[&[2, 3], &[4, 5]]).is_err());
    /// ```
    pub fn sizes(&self, shapes: &[&[usize]]) -> Result<Vec<(char, usize)>, TensorError> {
        let err = |reason: String| TensorError::Einsum {
            spec: self.to_string(),
            reason,
        };
        if shapes.len() != self.inputs.len() {
            return Err(err(format!(
                "{} operands given for {} terms",
                shapes.len(),
                self.inputs.len()
            )));
        }
        let mut sizes: Vec<(char, usize)> = Vec::new();
        for (k, (term, shape)) in self.inputs.iter().zip(shapes).enumerate() {
            if term.len() != shape.len() {
                return Err(err(format!(
                    "operand {k} has shape {shape:?} but term '{}' names {} axes",
                    term.iter().collect::<String>(),
                    term.len()
                )));
            }
            for (&c, &d) in term.iter().zip(shape.iter()) {
                match sizes.iter().find(|(x, _)| *x == c) {
                    Some(&(_, e)) if e != d => {
                        return Err(err(format!("axis '{c}' has sizes {e} and {d}")))
                    }
                    Some(_) => {}
                    None => sizes.push((c, d)),
                }
            }
        }
        Ok(sizes)
    }

    /// The shape of the result for the given operand shapes.
    ///
    /// ```
    /// use secondo_tensor::EinsumSpec;
    /// let s: EinsumSpec = "ij->j".parse().unwrap();
    /// assert_eq!(s.output_shape(&[&[2, 7]]).unwrap(), vec![7]);
    /// ```
    pub fn output_shape(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, TensorError> {
        let sizes = self.sizes(shapes)?;
        Ok(self.output.iter().map(|c| size_of(&sizes, *c)).collect())
    }

    /// Floating-point operations of [`einsum_parsed`] on operands of these
    /// shapes: two per multiply-add of each pairwise product, in the order it
    /// takes them. Operands with equal `identities` are one tensor: a product
    /// of a tensor with its own transpose is symmetric and counts one
    /// multiply-add per pair of mirrored entries, as it runs. Memory-bound
    /// steps are not counted: products that sum over no letter (elementwise or
    /// outer products) and sums over a letter of one operand only.
    ///
    /// ```
    /// use secondo_tensor::EinsumSpec;
    /// let s: EinsumSpec = "ni,oi->no".parse().unwrap();
    /// assert_eq!(s.flops(&[&[8, 3], &[5, 3]], &[0, 1]).unwrap(), 2 * 8 * 3 * 5);
    /// // x xᵀ: 4·5/2 entries, each a sum over 100
    /// let gram: EinsumSpec = "ik,jk->ij".parse().unwrap();
    /// assert_eq!(gram.flops(&[&[4, 100], &[4, 100]], &[7, 7]).unwrap(), 2 * 10 * 100);
    /// ```
    pub fn flops(&self, shapes: &[&[usize]], identities: &[usize]) -> Result<u64, TensorError> {
        let sizes = self.sizes(shapes)?;
        if identities.len() != shapes.len() {
            return Err(TensorError::Einsum {
                spec: self.to_string(),
                reason: format!(
                    "{} identities given for {} operands",
                    identities.len(),
                    shapes.len()
                ),
            });
        }
        // Each pool entry: its letters and, for an operand, its identity.
        let mut pool: Vec<(Vec<char>, Option<usize>)> = self
            .inputs
            .iter()
            .cloned()
            .zip(identities.iter().map(|&i| Some(i)))
            .collect();
        let mut multiply_adds = 0u64;
        for step in pairwise_path(self, &sizes) {
            let (tb, ib) = pool.remove(step.b);
            let (ta, ia) = pool.remove(step.a);
            let same = ia.is_some() && ia == ib;
            multiply_adds += step_multiply_adds(&ta, &tb, &step.out, &sizes, same);
            pool.push((step.out, None));
        }
        Ok(2 * multiply_adds)
    }
}

/// Multiply-adds of [`binary`] on operands with letters `ta` and `tb` (`same`:
/// one tensor), mirroring its choice of a symmetric product.
fn step_multiply_adds(
    ta: &[char],
    tb: &[char],
    out: &[char],
    sizes: &[(char, usize)],
    same: bool,
) -> u64 {
    let l = Letters::of(ta, tb, out);
    let size = |cs: &[char]| -> u64 { cs.iter().map(|&c| size_of(sizes, c) as u64).product() };
    let (batch, m, k, n) = (size(&l.batch), size(&l.m), size(&l.k), size(&l.n));
    if k <= 1 {
        // Nothing summed: an elementwise or outer product, memory-bound.
        return 0;
    }
    let all = batch * m * k * n;
    // A symmetric product: the operand, unsummed, against itself with its
    // row letters renamed, no batch letters.
    let symmetric = same
        && l.a.len() == ta.len()
        && l.b.len() == tb.len()
        && ta.len() == tb.len()
        && m == n
        && all > SMALL_PRODUCT as u64
        && ta
            .iter()
            .zip(tb)
            .all(|(x, y)| (x == y && !out.contains(x)) || (!tb.contains(x) && !ta.contains(y)));
    if symmetric {
        m * (m + 1) / 2 * batch * k
    } else {
        all
    }
}

/// The letters of a pairwise product of operands lettered `ta` and `tb` into
/// `out`, grouped as [`binary`] runs it: a batched GEMM after each operand's
/// own letters (in neither the other operand nor the result) are summed away.
struct Letters {
    /// `ta` without its own letters.
    a: Vec<char>,
    /// `tb` without its own letters.
    b: Vec<char>,
    /// In both operands and in the result.
    batch: Vec<char>,
    /// The rows: in `a` only.
    m: Vec<char>,
    /// Summed: in both operands, not in the result.
    k: Vec<char>,
    /// The columns: in `b` only.
    n: Vec<char>,
}

impl Letters {
    fn of(ta: &[char], tb: &[char], out: &[char]) -> Letters {
        let kept = |t: &[char], other: &[char]| -> Vec<char> {
            t.iter()
                .copied()
                .filter(|c| other.contains(c) || out.contains(c))
                .collect()
        };
        let (a, b) = (kept(ta, tb), kept(tb, ta));
        let only = |t: &[char], other: &[char]| -> Vec<char> {
            t.iter().copied().filter(|c| !other.contains(c)).collect()
        };
        let shared = |in_out: bool| -> Vec<char> {
            a.iter()
                .copied()
                .filter(|c| b.contains(c) && out.contains(c) == in_out)
                .collect()
        };
        Letters {
            batch: shared(true),
            m: only(&a, &b),
            k: shared(false),
            n: only(&b, &a),
            a,
            b,
        }
    }
}

fn size_of(sizes: &[(char, usize)], c: char) -> usize {
    sizes.iter().find(|(x, _)| *x == c).map_or(1, |p| p.1)
}

/// Evaluates an einsum over any number of operands (pairwise, left to right),
/// each pair as batched GEMM calls on strided views (copies only when a view
/// cannot be expressed with strides).
///
/// ```
/// use secondo_tensor::{einsum, Tensor};
/// let g = Tensor::from_vec(vec![2, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
/// let x = Tensor::from_vec(vec![2, 3], vec![1.0f64, 0.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
/// let per_sample = einsum("no,ni->noi", &[&g, &x]).unwrap();
/// assert_eq!(per_sample.shape(), &[2, 2, 3]);
/// let summed = einsum("no,ni->oi", &[&g, &x]).unwrap();
/// assert_eq!(summed.to_f64_vec(), vec![1.0, 3.0, 4.0, 2.0, 4.0, 6.0]);
/// ```
pub fn einsum(spec: &str, operands: &[&Tensor]) -> Result<Tensor, TensorError> {
    let spec: EinsumSpec = spec.parse()?;
    einsum_parsed(&spec, operands)
}

/// [`einsum`] with an already parsed specification.
///
/// ```
/// use secondo_tensor::{einsum_parsed, EinsumSpec, Tensor};
/// let s: EinsumSpec = "i,i->".parse().unwrap();
/// let v = Tensor::from_vec(vec![2], vec![3.0f64, 4.0]).unwrap();
/// assert_eq!(einsum_parsed(&s, &[&v, &v]).unwrap().item(), 25.0);
/// ```
pub fn einsum_parsed(spec: &EinsumSpec, operands: &[&Tensor]) -> Result<Tensor, TensorError> {
    let shapes: Vec<&[usize]> = operands.iter().map(|t| t.shape()).collect();
    let sizes = spec.sizes(&shapes)?;
    if let Some(t) = operands.iter().find(|t| t.dtype() != operands[0].dtype()) {
        return Err(TensorError::DTypeMismatch {
            op: format!("einsum '{spec}'"),
            a: operands[0].dtype(),
            b: t.dtype(),
        });
    }
    if operands.len() == 1 {
        return unary(operands[0], &spec.inputs[0], &spec.output);
    }
    let mut pool: Vec<(Tensor, Vec<char>)> = operands
        .iter()
        .zip(&spec.inputs)
        .map(|(t, term)| ((*t).clone(), term.clone()))
        .collect();
    for step in pairwise_path(spec, &sizes) {
        let (tb, termb) = pool.remove(step.b);
        let (ta, terma) = pool.remove(step.a);
        let r = binary(&ta, &terma, &tb, &termb, &step.out)?;
        pool.push((r, step.out));
    }
    let (result, term) = pool.pop().expect("one operand left");
    if term == spec.output {
        Ok(result)
    } else {
        unary(&result, &term, &spec.output)
    }
}

/// Products with at most this many multiply-adds run as plain loops.
const SMALL_PRODUCT: usize = 64;

/// `dst = lhs · rhs` by plain loops, for tiny sizes.
///
/// # Safety
/// As for [`gemm_into`]: the pointers and strides address valid memory.
#[allow(clippy::too_many_arguments)]
unsafe fn small_product<T: crate::Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d: Strided,
    lhs: *const T,
    l: Strided,
    rhs: *const T,
    r: Strided,
) {
    for i in 0..m as isize {
        for j in 0..n as isize {
            let mut acc = T::zero();
            for p in 0..k as isize {
                acc += *lhs.offset(i * l.rs + p * l.cs) * *rhs.offset(p * r.rs + j * r.cs);
            }
            *dst.offset(i * d.rs + j * d.cs) = acc;
        }
    }
}

/// One step of the pairwise evaluation: operands `a < b` of the pool are
/// removed and their contraction, with letters `out`, is pushed at its end.
struct Step {
    a: usize,
    b: usize,
    out: Vec<char>,
}

/// The order in which [`einsum_parsed`] contracts the operands of `spec`,
/// greedily: the pair whose result is smallest (then the cheapest pair),
/// keeping only letters still needed elsewhere.
fn pairwise_path(spec: &EinsumSpec, sizes: &[(char, usize)]) -> Vec<Step> {
    let size = |term: &[char]| -> usize { term.iter().map(|&c| size_of(sizes, c)).product() };
    let mut pool = spec.inputs.clone();
    let mut steps = Vec::with_capacity(pool.len().saturating_sub(1));
    while pool.len() > 1 {
        let mut best: Option<(Step, (usize, usize))> = None;
        for a in 0..pool.len() {
            for b in a + 1..pool.len() {
                let out = if pool.len() == 2 {
                    spec.output.clone()
                } else {
                    let needed: Vec<char> = pool
                        .iter()
                        .enumerate()
                        .filter(|&(k, _)| k != a && k != b)
                        .flat_map(|(_, t)| t.iter().copied())
                        .chain(spec.output.iter().copied())
                        .collect();
                    let mut t: Vec<char> = Vec::new();
                    for &c in pool[a].iter().chain(&pool[b]) {
                        if needed.contains(&c) && !t.contains(&c) {
                            t.push(c);
                        }
                    }
                    t
                };
                let mut all = pool[a].clone();
                all.extend(pool[b].iter().filter(|c| !pool[a].contains(c)));
                let cost = (size(&out), size(&all));
                if best.as_ref().is_none_or(|(_, c)| cost < *c) {
                    best = Some((Step { a, b, out }, cost));
                }
            }
        }
        let (step, _) = best.expect("at least two operands");
        pool.remove(step.b);
        pool.remove(step.a);
        pool.push(step.out.clone());
        steps.push(step);
    }
    steps
}

/// Sums the axes of `t` not in `keep_or_out` then permutes to `out`'s order.
fn unary(t: &Tensor, term: &[char], out: &[char]) -> Result<Tensor, TensorError> {
    let summed: Vec<usize> = (0..term.len())
        .filter(|&i| !out.contains(&term[i]))
        .collect();
    let reduced = ReduceOp::Sum.apply(t, &summed)?;
    let rest: Vec<char> = term.iter().copied().filter(|c| out.contains(c)).collect();
    let perm: Vec<usize> = out
        .iter()
        .map(|c| {
            rest.iter()
                .position(|x| x == c)
                .expect("output letter in operand")
        })
        .collect();
    reduced.permute(&perm)
}

/// A tensor with its letters, contiguous strides and sizes per letter.
struct View<'a> {
    t: &'a Tensor,
    term: Vec<char>,
}

impl View<'_> {
    fn stride(&self, c: char) -> isize {
        let strides = contiguous_strides(self.t.shape());
        self.term
            .iter()
            .position(|&x| x == c)
            .map_or(0, |i| strides[i])
    }
    fn size(&self, c: char) -> usize {
        self.term
            .iter()
            .position(|&x| x == c)
            .map_or(1, |i| self.t.shape()[i])
    }
}

/// The single stride of a group of letters when they can be merged into one axis.
fn merged_stride(group: &[char], term: &[char], shape: &[usize]) -> Option<isize> {
    let strides = contiguous_strides(shape);
    let dims: Vec<(usize, isize)> = group
        .iter()
        .map(|c| {
            let i = term.iter().position(|x| x == c).expect("letter in term");
            (shape[i], strides[i])
        })
        .filter(|&(d, _)| d != 1)
        .collect();
    if dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0 as isize) {
        Some(dims.last().map_or(1, |d| d.1))
    } else {
        None
    }
}

fn binary(
    a: &Tensor,
    ta: &[char],
    b: &Tensor,
    tb: &[char],
    out: &[char],
) -> Result<Tensor, TensorError> {
    // Sum letters private to one operand first.
    let Letters {
        a: kept_a,
        b: kept_b,
        batch,
        m,
        k,
        n,
    } = Letters::of(ta, tb, out);
    let a = if kept_a.len() < ta.len() {
        unary(a, ta, &kept_a)?
    } else {
        a.clone()
    };
    let b = if kept_b.len() < tb.len() {
        unary(b, tb, &kept_b)?
    } else {
        b.clone()
    };
    let (ta, tb) = (kept_a, kept_b);

    // Bring each operand to a layout where M, K (and K, N) merge into single strided axes.
    let canon = |t: Tensor,
                 term: Vec<char>,
                 rows: &[char],
                 cols: &[char]|
     -> Result<(Tensor, Vec<char>), TensorError> {
        if merged_stride(rows, &term, t.shape()).is_some()
            && merged_stride(cols, &term, t.shape()).is_some()
        {
            return Ok((t, term));
        }
        let order: Vec<char> = batch.iter().chain(rows).chain(cols).copied().collect();
        let perm: Vec<usize> = order
            .iter()
            .map(|c| term.iter().position(|x| x == c).expect("letter"))
            .collect();
        Ok((t.permute(&perm)?, order))
    };
    let (a, ta) = canon(a, ta, &m, &k)?;
    let (b, tb) = canon(b, tb, &k, &n)?;
    let va = View {
        t: &a,
        term: ta.clone(),
    };
    let vb = View {
        t: &b,
        term: tb.clone(),
    };

    let letter_size = |c: char| {
        if ta.contains(&c) {
            va.size(c)
        } else {
            vb.size(c)
        }
    };
    let sizes = |cs: &[char]| -> usize { cs.iter().map(|&c| letter_size(c)).product() };
    let (mm, kk, nn) = (sizes(&m), sizes(&k), sizes(&n));
    let out_shape: Vec<usize> = out.iter().map(|&c| letter_size(c)).collect();

    // Destination: write straight into the result when its M and N groups merge.
    let direct = merged_stride(&m, out, &out_shape).is_some()
        && merged_stride(&n, out, &out_shape).is_some();
    let (d_shape, d_term): (Vec<usize>, Vec<char>) = if direct {
        (out_shape.clone(), out.to_vec())
    } else {
        let term: Vec<char> = batch.iter().chain(&m).chain(&n).copied().collect();
        (term.iter().map(|&c| letter_size(c)).collect(), term)
    };
    let d_strides = contiguous_strides(&d_shape);
    let d_stride = |c: char| {
        d_term
            .iter()
            .position(|&x| x == c)
            .map_or(0, |i| d_strides[i])
    };

    let group = |view: &View, g: &[char]| {
        merged_stride(g, &view.term, view.t.shape()).expect("canonical layout")
    };
    let la = Strided {
        rs: group(&va, &m),
        cs: group(&va, &k),
    };
    let rb = Strided {
        rs: group(&vb, &k),
        cs: group(&vb, &n),
    };
    let dd = Strided {
        rs: merged_stride(&m, &d_term, &d_shape).expect("merged"),
        cs: merged_stride(&n, &d_term, &d_shape).expect("merged"),
    };
    let batch_sizes: Vec<usize> = batch.iter().map(|&c| va.size(c)).collect();
    let batch_count: usize = batch_sizes.iter().product();
    let batch_strides: Vec<(isize, isize, isize)> = batch
        .iter()
        .map(|&c| (va.stride(c), vb.stride(c), d_stride(c)))
        .collect();
    let offsets = |mut idx: usize| -> (isize, isize, isize) {
        let (mut oa, mut ob, mut od) = (0, 0, 0);
        for (j, &(sa, sb, sd)) in batch_strides.iter().enumerate().rev() {
            let i = (idx % batch_sizes[j]) as isize;
            idx /= batch_sizes[j];
            oa += i * sa;
            ob += i * sb;
            od += i * sd;
        }
        (oa, ob, od)
    };

    let d_numel: usize = d_shape.iter().product();
    let result = crate::dispatch!(a, av, T => {
        let bv = b.typed::<T>("einsum")?;
        let mut dst = crate::buffer::for_writing::<T>(d_numel);
        // Elementwise products (no M or N extent) summed over leading K axes,
        // the operands' other axes laid out like the destination's: one
        // vectorizable pass per K index (e.g. a product, or `Σ_c x_c²`).
        let batch = batch_count as isize;
        let leading_sum = mm * nn == 1
            && d_numel == batch_count
            && av.len() == batch_count * kk
            && bv.len() == batch_count * kk
            && batch_strides.iter().all(|&(sa, sb, sd)| sa == sd && sb == sd)
            && (kk == 1 || (la.cs == batch && rb.rs == batch));
        if kk == 0 {
            // An empty contraction: a sum of nothing.
            dst.iter_mut().for_each(|d| {
                d.write(<T as num_traits::Zero>::zero());
            });
        } else if leading_sum {
            dst.iter_mut().zip(av.iter().zip(bv.iter())).for_each(|(d, (&x, &y))| {
                d.write(x * y);
            });
            for p in 1..kk {
                let (ap, bp) = (&av[p * batch_count..], &bv[p * batch_count..]);
                dst.iter_mut().zip(ap.iter().zip(bp)).for_each(|(d, (&x, &y))| {
                    // SAFETY: the first pass above wrote every element.
                    unsafe { *d.assume_init_mut() += x * y };
                });
            }
        } else if d_numel > 0 {
            let (ap, bp, dp) = (av.as_ptr() as usize, bv.as_ptr() as usize, dst.as_mut_ptr() as usize);
            // One operand times its own transpose: a symmetric product.
            let gram = batch_count == 1
                && mm == nn
                && mm * nn * kk > SMALL_PRODUCT
                && std::ptr::eq(av.as_ptr(), bv.as_ptr())
                && la.rs == rb.cs
                && la.cs == rb.rs;
            let run = |bi: usize, parallel: bool| {
                let (oa, ob, od) = offsets(bi);
                // SAFETY: offsets and strides come from the operands' own shapes; each
                // batch writes a disjoint block of `dst`.
                unsafe {
                    if gram {
                        gram_into::<T>(mm, kk, dp as *mut T, dd, ap as *const T, la, parallel);
                    } else if mm * nn * kk <= SMALL_PRODUCT {
                        // Tiny products (e.g. elementwise with batch letters): a GEMM
                        // call per batch costs far more than the arithmetic.
                        small_product::<T>(
                            mm, nn, kk,
                            (dp as *mut T).offset(od), dd,
                            (ap as *const T).offset(oa), la,
                            (bp as *const T).offset(ob), rb,
                        );
                    } else {
                        gemm_into::<T>(
                            mm, nn, kk,
                            (dp as *mut T).offset(od), dd,
                            (ap as *const T).offset(oa), la,
                            (bp as *const T).offset(ob), rb,
                            parallel,
                        )
                    }
                }
            };
            if batch_count > 1 && mm * nn * kk.max(1) * batch_count >= 1 << 15 {
                // Chunks of batches per task keep the scheduling cost per product low.
                let chunk = (batch_count / (4 * rayon::current_num_threads())).max(1);
                (0..batch_count.div_ceil(chunk)).into_par_iter().for_each(|c| {
                    (c * chunk..((c + 1) * chunk).min(batch_count)).for_each(|bi| run(bi, false))
                });
            } else {
                (0..batch_count).for_each(|bi| run(bi, true));
            }
        }
        // SAFETY: each path above wrote every element: the batches' M×N blocks
        // tile the destination (its letters are the batch, M and N letters).
        let dst = unsafe { crate::buffer::assume_init(dst) };
        Tensor::from_typed(d_shape.clone(), dst)
    });
    if direct {
        return Ok(result);
    }
    let perm: Vec<usize> = out
        .iter()
        .map(|c| d_term.iter().position(|x| x == c).expect("letter"))
        .collect();
    result.permute(&perm)
}
