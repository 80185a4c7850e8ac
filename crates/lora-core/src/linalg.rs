//! Host-side dense linear algebra in `f64` for the SVD combination of adapters.
//!
//! Matrices are row-major `Vec<f64>` with explicit `(rows, cols)`.

/// A row-major dense matrix.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Matrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<f64>,
}

impl Matrix {
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub(crate) fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    fn set(&mut self, r: usize, c: usize, value: f64) {
        self.data[r * self.cols + c] = value;
    }

    pub(crate) fn transpose(&self) -> Self {
        let mut out = Self::zeros(self.cols, self.rows);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.set(c, r, self.at(r, c));
            }
        }
        out
    }

    pub(crate) fn matmul(&self, other: &Self) -> Self {
        assert_eq!(self.cols, other.rows, "inner dimensions of a host matmul");
        let mut out = Self::zeros(self.rows, other.cols);
        for r in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(r, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.data[k * other.cols..(k + 1) * other.cols];
                let dst = &mut out.data[r * other.cols..(r + 1) * other.cols];
                for (d, b) in dst.iter_mut().zip(row) {
                    *d += a * b;
                }
            }
        }
        out
    }

    fn column(&self, c: usize) -> Vec<f64> {
        (0..self.rows).map(|r| self.at(r, c)).collect()
    }

    fn set_column(&mut self, c: usize, values: &[f64]) {
        for (r, v) in values.iter().enumerate() {
            self.set(r, c, *v);
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Thin QR by modified Gram–Schmidt with one re-orthogonalisation pass: `m = q · r` with `q`
/// `[rows, cols]` having orthonormal (or zero, for dependent columns) columns and `r`
/// `[cols, cols]` upper triangular.
pub(crate) fn thin_qr(m: &Matrix) -> (Matrix, Matrix) {
    let mut q = Matrix::zeros(m.rows, m.cols);
    let mut r = Matrix::zeros(m.cols, m.cols);
    let scale = m
        .data
        .iter()
        .fold(0.0f64, |acc, v| acc.max(v.abs()))
        .max(1.0);
    for j in 0..m.cols {
        let mut v = m.column(j);
        for _pass in 0..2 {
            for i in 0..j {
                let qi = q.column(i);
                let proj = dot(&qi, &v);
                r.set(i, j, r.at(i, j) + proj);
                for (vk, qk) in v.iter_mut().zip(&qi) {
                    *vk -= proj * qk;
                }
            }
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-12 * scale {
            r.set(j, j, norm);
            let unit: Vec<f64> = v.iter().map(|x| x / norm).collect();
            q.set_column(j, &unit);
        }
    }
    (q, r)
}

/// Singular value decomposition of a square matrix by one-sided Jacobi rotations:
/// `a = u · diag(s) · vᵀ`, singular values in descending order.
pub(crate) fn jacobi_svd(a: &Matrix) -> (Matrix, Vec<f64>, Matrix) {
    assert_eq!(a.rows, a.cols, "jacobi_svd takes a square matrix");
    let n = a.cols;
    // Work on columns: w = a · v converges to u · diag(s).
    let mut w = a.clone();
    let mut v = Matrix::zeros(n, n);
    for i in 0..n {
        v.set(i, i, 1.0);
    }
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in (p + 1)..n {
                let (wp, wq) = (w.column(p), w.column(q));
                let alpha = dot(&wp, &wp);
                let beta = dot(&wq, &wq);
                let gamma = dot(&wp, &wq);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut w, p, q, c, s);
                rotate(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<(f64, usize)> = (0..n)
        .map(|j| (dot(&w.column(j), &w.column(j)).sqrt(), j))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut u = Matrix::zeros(n, n);
    let mut v_sorted = Matrix::zeros(n, n);
    let mut s = Vec::with_capacity(n);
    for (k, (sigma, j)) in order.into_iter().enumerate() {
        s.push(sigma);
        v_sorted.set_column(k, &v.column(j));
        if sigma > 0.0 {
            let col: Vec<f64> = w.column(j).iter().map(|x| x / sigma).collect();
            u.set_column(k, &col);
        }
    }
    (u, s, v_sorted)
}

fn rotate(m: &mut Matrix, p: usize, q: usize, c: f64, s: f64) {
    for r in 0..m.rows {
        let (mp, mq) = (m.at(r, p), m.at(r, q));
        m.set(r, p, c * mp - s * mq);
        m.set(r, q, s * mp + c * mq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut state = seed;
        let data = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
            })
            .collect();
        Matrix { rows, cols, data }
    }

    fn max_abs_diff(a: &Matrix, b: &Matrix) -> f64 {
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn qr_reconstructs_and_is_orthonormal() {
        let m = matrix(7, 4, 1);
        let (q, r) = thin_qr(&m);
        assert!(max_abs_diff(&q.matmul(&r), &m) < 1e-12);
        let qtq = q.transpose().matmul(&q);
        for i in 0..4 {
            for j in 0..4 {
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((qtq.at(i, j) - expected).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn qr_of_dependent_columns_keeps_the_product() {
        let mut m = matrix(5, 3, 2);
        for r in 0..5 {
            let v = m.at(r, 0) * 2.0;
            m.set(r, 2, v);
        }
        let (q, r) = thin_qr(&m);
        assert!(max_abs_diff(&q.matmul(&r), &m) < 1e-12);
        assert_eq!(r.at(2, 2), 0.0);
    }

    #[test]
    fn svd_reconstructs_with_sorted_values() {
        let a = matrix(6, 6, 3);
        let (u, s, v) = jacobi_svd(&a);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        let mut us = u.clone();
        for r in 0..6 {
            for (c, sigma) in s.iter().enumerate() {
                us.set(r, c, u.at(r, c) * sigma);
            }
        }
        assert!(max_abs_diff(&us.matmul(&v.transpose()), &a) < 1e-12);
    }
}
