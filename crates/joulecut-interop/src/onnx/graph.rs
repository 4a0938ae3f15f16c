//! A small builder over the prost-generated ONNX types: initializers, nodes, typed graph inputs
//! and outputs.

use super::proto::{
    self, AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

/// The graph being built.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

/// A node attribute.
pub(crate) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dim {
    /// A named dynamic axis (`batch`, `sequence`).
    Dynamic(&'static str),
    /// A fixed size.
    Fixed(usize),
}

impl Graph {
    /// Adds an initializer of `dtype` with little-endian `raw` bytes.
    pub fn init(&mut self, name: &str, dtype: DataType, dims: &[usize], raw: Vec<u8>) {
        self.initializers.push(TensorProto {
            name: Some(name.into()),
            data_type: Some(dtype as i32),
            dims: dims.iter().map(|&d| d as i64).collect(),
            raw_data: Some(raw),
            ..Default::default()
        });
    }

    /// Adds an F32 initializer.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.init(name, DataType::Float, dims, raw);
    }

    /// Adds an INT64 initializer.
    pub fn init_i64(&mut self, name: &str, dims: &[usize], values: &[i64]) {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.init(name, DataType::Int64, dims, raw);
    }

    /// Adds an F32 scalar initializer; returns its name.
    pub fn scalar_f32(&mut self, name: &str, v: f32) -> String {
        self.init_f32(name, &[], &[v]);
        name.to_string()
    }

    /// Adds an F64 scalar initializer; returns its name.
    pub fn scalar_f64(&mut self, name: &str, v: f64) -> String {
        self.init(name, DataType::Double, &[], v.to_le_bytes().to_vec());
        name.to_string()
    }

    /// Adds a node whose output is `{name}_out`; returns that name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.node_to(op, name, inputs, attrs, &format!("{name}_out"))
    }

    /// Adds a node writing `output`; returns `output`.
    pub fn node_to(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        output: &str,
    ) -> String {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
        output.to_string()
    }

    /// Renames the output of the last node (the graph's output).
    pub fn rename_last_output(&mut self, to: &str) {
        if let Some(n) = self.nodes.last_mut() {
            n.output = vec![to.into()];
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DataType, dims: &[Dim]) {
        self.inputs.push(value_info(name, dtype, dims));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, dtype: DataType, dims: &[Dim]) {
        self.outputs.push(value_info(name, dtype, dims));
    }

    /// The graph with the declared inputs and outputs.
    pub fn finish(self) -> GraphProto {
        GraphProto {
            name: Some("joulecut".into()),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        }
    }
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => {
            p.r#type = Some(AttributeType::Int as i32);
            p.i = Some(i);
        }
        Attr::Ints(v) => {
            p.r#type = Some(AttributeType::Ints as i32);
            p.ints = v;
        }
        Attr::Float(f) => {
            p.r#type = Some(AttributeType::Float as i32);
            p.f = Some(f);
        }
    }
    p
}

/// A tensor of `dtype` and shape `dims`.
fn value_info(name: &str, dtype: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = |d: &Dim| Dimension {
        value: Some(match *d {
            Dim::Dynamic(n) => dimension::Value::DimParam(n.into()),
            Dim::Fixed(n) => dimension::Value::DimValue(n as i64),
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The model around a graph: IR version 8, the default-domain opset `opset`.
pub(crate) fn model(graph: GraphProto, opset: i64) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: Some(8),
        producer_name: Some("joulecut".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
