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
}

/// A node attribute.
pub(crate) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
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

    /// Adds a node; returns its (first) output's name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let output = format!("{name}_out");
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attrs
                .into_iter()
                .map(|(n, a)| match a {
                    Attr::Int(i) => AttributeProto {
                        name: Some(n.into()),
                        r#type: Some(AttributeType::Int as i32),
                        i: Some(i),
                        ..Default::default()
                    },
                    Attr::Ints(v) => AttributeProto {
                        name: Some(n.into()),
                        r#type: Some(AttributeType::Ints as i32),
                        ints: v,
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        });
        output
    }

    /// Renames the output of the last node (the graph's output).
    pub fn rename_last_output(&mut self, to: &str) {
        if let Some(n) = self.nodes.last_mut() {
            n.output = vec![to.into()];
        }
    }

    /// The graph with one F32 input `[batch, features]` and one F32 output `[batch, classes]`.
    pub fn finish(self, input: &str, features: usize, output: &str, classes: usize) -> GraphProto {
        GraphProto {
            name: Some("joulecut".into()),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input, features)],
            output: vec![value_info(output, classes)],
            ..Default::default()
        }
    }
}

/// A float tensor `[batch, n]` with a symbolic batch dimension.
fn value_info(name: &str, n: usize) -> ValueInfoProto {
    let dim = |v: dimension::Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("batch".into())),
                        dim(dimension::Value::DimValue(n as i64)),
                    ],
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
