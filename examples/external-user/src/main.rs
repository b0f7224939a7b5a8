//! Uses selfsup's tensor crate from another project: builds a tiny graph and backpropagates.
use selfsup_tensor::{Result, Tensor};

fn main() -> Result<()> {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?.requires_grad_();
    let loss = x.sqr()?.sum_all()?;
    loss.backward()?;
    println!("loss {} grad {:?}", loss.item()?, x.grad().map(|g| g.to_vec::<f32>()));
    let _views = selfsup_data::ViewConfig::default();
    Ok(())
}
