//! Lowering: nginx statements to the model.
