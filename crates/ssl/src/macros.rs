//! `impl_module!`: the [`selfsup_nn::Module`] impl of a method struct whose fields are modules,
//! each visited under its field name (`encoder.`, `projector.`, `target.`, ...); and
//! `encoder_access!`: the two encoder accessors of [`crate::SslMethod`] for a struct whose
//! encoder is its `encoder` field.

/// Implements [`selfsup_nn::Module`] for `$ty` by visiting the listed module fields in order,
/// each under its own name. `buffers: [..]` lists plain tensor fields saved as buffers (queues,
/// centres).
macro_rules! impl_module {
    ($ty:ty { $($field:ident),* $(,)? } $(buffers: [$($buf:ident),* $(,)?])?) => {
        impl selfsup_nn::Module for $ty {
            fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &selfsup_tensor::Tensor)) {
                $( selfsup_nn::Module::visit_params(&self.$field, &selfsup_nn::join(prefix, stringify!($field)), f); )*
            }
            fn visit_params_mut(
                &mut self,
                prefix: &str,
                f: &mut dyn FnMut(String, &mut selfsup_tensor::Tensor),
            ) {
                $( selfsup_nn::Module::visit_params_mut(&mut self.$field, &selfsup_nn::join(prefix, stringify!($field)), f); )*
            }
            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &selfsup_tensor::Tensor)) {
                $( selfsup_nn::Module::visit_buffers(&self.$field, &selfsup_nn::join(prefix, stringify!($field)), f); )*
                $($( f(selfsup_nn::join(prefix, stringify!($buf)), &self.$buf); )*)?
            }
            fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut selfsup_tensor::Tensor)) {
                $( selfsup_nn::Module::visit_buffers_mut(&mut self.$field, &selfsup_nn::join(prefix, stringify!($field)), f); )*
                $($( f(selfsup_nn::join(prefix, stringify!($buf)), &mut self.$buf); )*)?
            }
            fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
                $( selfsup_nn::Module::visit_rng(&self.$field, &selfsup_nn::join(prefix, stringify!($field)), f); )*
            }
            fn load_rng(
                &self,
                prefix: &str,
                states: &std::collections::HashMap<String, (u64, u64)>,
            ) {
                $( selfsup_nn::Module::load_rng(&self.$field, &selfsup_nn::join(prefix, stringify!($field)), states); )*
            }
            fn set_train(&mut self, train: bool) {
                $( selfsup_nn::Module::set_train(&mut self.$field, train); )*
            }
        }
    };
}
pub(crate) use impl_module;

/// The [`crate::SslMethod::encoder`] and [`crate::SslMethod::encoder_mut`] methods for a method
/// struct that keeps its encoder in a field named `encoder`; used inside the trait impl.
macro_rules! encoder_access {
    () => {
        fn encoder(&self) -> &$crate::encoder::Encoder {
            &self.encoder
        }
        fn encoder_mut(&mut self) -> &mut $crate::encoder::Encoder {
            &mut self.encoder
        }
    };
}

pub(crate) use encoder_access;
