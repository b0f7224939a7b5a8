//! DINO's self-distillation loss (Caron et al. 2021). The teacher's outputs on the global
//! views are centred and sharpened into targets `q_i = softmax((t_i - c) / tau_t)` (constants:
//! no gradient reaches the teacher); every student view `v` other than `i` is trained towards
//! `q_i` with the cross-entropy `-sum_k q_ik log softmax(s_v / tau_s)_k`, averaged over the
//! batch and over all such pairs. The centre `c` follows the teacher's batch mean by EMA
//! ([`dino_center`]).

use selfsup_tensor::{Error, Result, Tensor};

use super::common::temperature;

fn shape_err<T>(msg: String) -> Result<T> {
    Err(Error::Shape {
        op: "dino_loss",
        msg,
    })
}

/// The DINO loss of the student's outputs `student` (one `[N, K]` per view, global views
/// first) against the teacher's outputs `teacher` (one `[N, K]` per global view, in the same
/// order as the first student views), with centre `center` (`[K]` or `[1, K]`), student
/// temperature `student_temp` and teacher temperature `teacher_temp`.
pub fn dino_loss(
    student: &[Tensor],
    teacher: &[Tensor],
    center: &Tensor,
    student_temp: f64,
    teacher_temp: f64,
) -> Result<Tensor> {
    temperature("dino_loss", student_temp)?;
    temperature("dino_loss", teacher_temp)?;
    if teacher.is_empty() || student.len() < 2 || teacher.len() > student.len() {
        return shape_err(format!(
            "needs at least 2 student views and 1..=student views teacher views, got {} and {}",
            student.len(),
            teacher.len()
        ));
    }
    let shape = student[0].shape().to_vec();
    if shape.len() != 2 || student.iter().chain(teacher).any(|t| t.shape() != shape) {
        return shape_err(format!(
            "every output must be [N, K] of the same shape, got {:?}",
            student
                .iter()
                .chain(teacher)
                .map(|t| t.shape().to_vec())
                .collect::<Vec<_>>()
        ));
    }
    if center.numel() != shape[1] {
        return shape_err(format!(
            "centre must have K = {} entries, got {:?}",
            shape[1],
            center.shape()
        ));
    }
    let center = center.reshape(&[1, shape[1]])?;
    let targets = teacher
        .iter()
        .map(|t| {
            t.detach()
                .sub(&center.detach())?
                .mul_scalar(1.0 / teacher_temp)?
                .softmax(-1)
        })
        .collect::<Result<Vec<_>>>()?;
    let log_probs = student
        .iter()
        .map(|s| s.mul_scalar(1.0 / student_temp)?.log_softmax(-1))
        .collect::<Result<Vec<_>>>()?;
    let mut total: Option<Tensor> = None;
    let mut pairs = 0usize;
    for (i, q) in targets.iter().enumerate() {
        for (v, lp) in log_probs.iter().enumerate() {
            if v == i {
                continue;
            }
            let ce = q.mul(lp)?.sum(&[-1], false)?.mean_all()?.neg()?;
            total = Some(match total {
                Some(t) => t.add(&ce)?,
                None => ce,
            });
            pairs += 1;
        }
    }
    match total {
        Some(t) => t.mul_scalar(1.0 / pairs as f64),
        None => shape_err("no pair of different views".into()),
    }
}

/// The next centre: `m * center + (1 - m) * mean of the rows of all `teacher` outputs`
/// (detached; same shape as `center`).
pub fn dino_center(center: &Tensor, teacher: &[Tensor], m: f64) -> Result<Tensor> {
    if teacher.is_empty() {
        return Err(Error::Invalid {
            op: "dino_center",
            msg: "needs at least one teacher output".into(),
        });
    }
    let refs: Vec<&Tensor> = teacher.iter().collect();
    let all = Tensor::concat(&refs, 0)?.detach();
    let mean = all.mean(&[0], false)?.reshape(center.shape())?;
    center
        .detach()
        .mul_scalar(m)?
        .add(&mean.mul_scalar(1.0 - m)?)
}
