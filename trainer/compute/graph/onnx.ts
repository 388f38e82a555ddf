import { onnx } from 'onnx-proto';
import type { HostTensor } from '../../model/tensor';
import type { AttrValue, Graph, Value } from './graph';
import { onnxDataType } from './ops';

// Serializes a Graph to an ONNX ModelProto (onnx-proto's generated protobufjs code, so no .proto
// is vendored here). Frozen weights go to one external data blob, because encoding 100 MB of
// weights into the protobuf costs seconds; ONNX Runtime reads the blob from memory by name.

export const DEFAULT_OPSET = 18;
export const MICROSOFT_OPSET = 1;
/** IR 9 matches opset 18-20; raise both together when an op needs a newer opset. */
export const DEFAULT_IR_VERSION = 9;
const EXTERNAL_ALIGNMENT = 64;

export interface SerializeOptions {
  opset?: number;
  irVersion?: number;
  /** File name the model refers to for external data (ORT matches it against `externalData`). */
  externalDataName?: string;
}

export interface SerializedModel {
  model: Uint8Array;
  /** The frozen weights; empty when the graph has none marked external. */
  externalData: Uint8Array;
  externalDataName: string;
}

export function tensorBytes(tensor: HostTensor): Uint8Array {
  const { data } = tensor;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function valueInfo(value: Value): onnx.IValueInfoProto {
  return {
    name: value.name,
    type: {
      tensorType: {
        elemType: onnxDataType(value.dtype),
        shape: { dim: value.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function tensorProto(name: string, tensor: HostTensor): onnx.ITensorProto {
  return { name, dims: tensor.shape, dataType: onnxDataType(tensor.dtype), rawData: tensorBytes(tensor) };
}

function attributeProto(name: string, value: AttrValue): onnx.IAttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use { float } for non-integer ${value}`);
    return { name, type: A.INT, i: value };
  }
  if (typeof value === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === 'number')) return { name, type: A.INTS, ints: value as number[] };
    return { name, type: A.STRINGS, strings: (value as string[]).map((s) => new TextEncoder().encode(s)) };
  }
  if ('float' in value) return { name, type: A.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: A.FLOATS, floats: value.floats };
  return { name, type: A.TENSOR, t: tensorProto(name, value) };
}

export function serializeModel(graph: Graph, options: SerializeOptions = {}): SerializedModel {
  const externalDataName = options.externalDataName ?? `${graph.name}.weights`;
  const initializers: onnx.ITensorProto[] = [];
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const { value, tensor, external, file } of graph.initializers) {
    if (!external) {
      initializers.push(tensorProto(value.name, tensor));
      continue;
    }
    if (file !== undefined) {
      initializers.push({
        name: value.name,
        dims: tensor.shape,
        dataType: onnxDataType(tensor.dtype),
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [{ key: 'location', value: file }],
      });
      continue;
    }
    const bytes = tensorBytes(tensor);
    const padding = (EXTERNAL_ALIGNMENT - (offset % EXTERNAL_ALIGNMENT)) % EXTERNAL_ALIGNMENT;
    if (padding > 0) chunks.push(new Uint8Array(padding));
    offset += padding;
    initializers.push({
      name: value.name,
      dims: tensor.shape,
      dataType: onnxDataType(tensor.dtype),
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: externalDataName },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ],
    });
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  for (const [value, tensor] of graph.constants) initializers.push(tensorProto(value.name, tensor));

  const usesMicrosoft = graph.nodes.some((n) => n.domain === 'com.microsoft');
  const model: onnx.IModelProto = {
    irVersion: options.irVersion ?? DEFAULT_IR_VERSION,
    producerName: 'idiom',
    opsetImport: [
      { domain: '', version: options.opset ?? DEFAULT_OPSET },
      ...(usesMicrosoft ? [{ domain: 'com.microsoft', version: MICROSOFT_OPSET }] : []),
    ],
    graph: {
      name: graph.name,
      node: graph.nodes.map((n) => ({
        name: n.name,
        opType: n.op,
        domain: n.domain,
        input: n.inputs.map((v) => (v ? v.name : '')),
        output: n.outputs.map((v) => v.name),
        attribute: Object.entries(n.attrs).map(([k, v]) => attributeProto(k, v)),
      })),
      initializer: initializers,
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
    },
  };
  const encoded = onnx.ModelProto.encode(model).finish();
  return { model: encoded, externalData: concatBytes(chunks, offset), externalDataName };
}

function concatBytes(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}
