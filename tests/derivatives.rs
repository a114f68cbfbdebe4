//! The f64 reference against central finite differences, for every model variant: the gradient of
//! E, J·v against the residual vector, and H·v against the gradient. Everything here is f64 on the
//! CPU; the backends are then checked against this reference in backend_suite.rs.

mod common;

use common::{all_fixtures, f64s};

const H: f64 = 1e-6;

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-12);
    num / den
}

fn shifted(th: &[f64], v: &[f64], t: f64) -> Vec<f64> {
    th.iter().zip(v).map(|(a, b)| a + t * b).collect()
}

#[test]
fn gradient_matches_finite_differences() {
    for (name, fx) in all_fixtures(11) {
        let r = &fx.reference;
        let th = f64s(&fx.theta);
        let g = r.gradient(&th);
        // Directional derivatives along random directions, and a few coordinates.
        for dir in [f64s(&fx.v), f64s(&fx.w)] {
            let fd = (r.loss(&shifted(&th, &dir, H)) - r.loss(&shifted(&th, &dir, -H))) / (2.0 * H);
            let an: f64 = g.iter().zip(&dir).map(|(a, b)| a * b).sum();
            assert!(
                (fd - an).abs() <= 1e-6 * an.abs().max(1.0),
                "{name}: {fd} vs {an}"
            );
        }
        for j in [0, fx.layout.q_off() + 3, fx.layout.len() - 1] {
            let mut e = vec![0.0; th.len()];
            e[j] = 1.0;
            let fd = (r.loss(&shifted(&th, &e, H)) - r.loss(&shifted(&th, &e, -H))) / (2.0 * H);
            assert!(
                (fd - g[j]).abs() <= 1e-5 * g[j].abs().max(1.0),
                "{name} coord {j}: {fd} vs {}",
                g[j]
            );
        }
    }
}

#[test]
fn jacobian_vector_product_matches_finite_differences_of_residuals() {
    for (name, fx) in all_fixtures(12) {
        let r = &fx.reference;
        let (th, v) = (f64s(&fx.theta), f64s(&fx.v));
        let jv = r.jvp(&th, &v);
        let ep = r.residuals(&shifted(&th, &v, H));
        let em = r.residuals(&shifted(&th, &v, -H));
        // e = r − r̂, so d e/dt = −J v.
        let fd: Vec<f64> = ep
            .iter()
            .zip(&em)
            .map(|(a, b)| -(a - b) / (2.0 * H))
            .collect();
        let err = rel_err(&jv, &fd);
        assert!(err < 1e-7, "{name}: relative error {err:e}");
    }
}

#[test]
fn hessian_vector_product_matches_finite_differences_of_the_gradient() {
    for (name, fx) in all_fixtures(13) {
        let r = &fx.reference;
        let (th, v) = (f64s(&fx.theta), f64s(&fx.v));
        let mut hv = r.hess_data(&th, &v);
        for j in 0..hv.len() {
            hv[j] += r.reg[j] * v[j];
        }
        let gp = r.gradient(&shifted(&th, &v, H));
        let gm = r.gradient(&shifted(&th, &v, -H));
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * H))
            .collect();
        let err = rel_err(&hv, &fd);
        assert!(err < 1e-6, "{name}: relative error {err:e}");
        // The Gauss–Newton product differs from it by the residual term, which is not small here.
        let gn = r.gn_data(&th, &v);
        assert!(
            rel_err(&gn, &r.hess_data(&th, &v)) > 1e-3,
            "{name}: the fixture should separate G from H"
        );
    }
}
