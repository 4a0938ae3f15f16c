//! Distillation in the harness's loop. `joulecut-distill` sits below the harness (it needs only
//! candle), so the adapter lives here: its [`KdObjective`] is an [`Objective`], and a [`Dataset`]
//! is the [`TrainingSet`] its teacher-logit cache is computed over.

use candle_core::Tensor;
use joulecut_distill::{KdObjective, TrainingSet};
use joulecut_models::Model;

use crate::data::Dataset;
use crate::train::Objective;

impl Objective for KdObjective {
    fn loss(
        &mut self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        self.batch_loss_with_hidden(model, x, y, indices)
    }
}

impl TrainingSet for Dataset {
    fn inputs(&self) -> &[f32] {
        &self.images
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn classes(&self) -> usize {
        self.classes
    }
}
