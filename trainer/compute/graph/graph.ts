import type { DType, HostTensor } from '../../model/tensor';

// The graph IR: values (typed, shaped edges) produced by nodes (ONNX ops). Op helpers in ops.ts
// build it with shape inference; autodiff.ts extends it with gradients; onnx.ts serializes it.

/** A dimension: a fixed size, or a symbol that ONNX Runtime binds at run time (e.g. 'T'). */
export type Dim = number | string;
export type Shape = readonly Dim[];

export type AttrValue = number | string | number[] | string[] | HostTensor | { float: number } | { floats: number[] };

export interface Node {
  readonly op: string;
  readonly domain: string; // '' for ai.onnx, 'com.microsoft' for contrib ops
  readonly inputs: readonly (Value | null)[]; // null = an omitted optional input
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, AttrValue>>;
  readonly name: string;
}

export type ValueKind = 'input' | 'initializer' | 'constant' | 'node';

export class Value {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    /** Changes only through Graph.outputAs, before serialization. */
    public name: string,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly kind: ValueKind,
    /** The node that computes this value; undefined for inputs, initializers and constants. */
    public producer?: Node,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  /** The static size of every dimension; throws when a dimension is symbolic. */
  staticShape(): number[] {
    return this.shape.map((d, i) => {
      if (typeof d !== 'number') throw new Error(`${this.name}: dimension ${i} is symbolic (${d})`);
      return d;
    });
  }

  toString(): string {
    return `${this.name}:${this.dtype}[${this.shape.join(',')}]`;
  }
}

export interface InitializerEntry {
  value: Value;
  tensor: HostTensor;
  /** Frozen weights go to the external data file instead of the protobuf. */
  external: boolean;
  /** The file the graph's weightSink wrote the tensor to; `tensor` then holds no data. */
  file?: string;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: InitializerEntry[] = [];
  /** Small tensors embedded in the protobuf (int64 shapes, scalars). */
  readonly constants = new Map<Value, HostTensor>();
  /**
   * Takes each frozen weight as it is added (writes it to a file, returns the file's name), so
   * the graph does not hold the weights of a large model.
   */
  weightSink?: (name: string, tensor: HostTensor) => string;
  private nextId = 0;
  private readonly usedNames = new Set<string>();
  private nameScope: string[] = [];

  constructor(readonly name = 'idiom') {}

  /** A unique value name; scope prefixes make graphs readable in Netron and error messages. */
  uniqueName(base: string): string {
    const scoped = this.nameScope.length > 0 ? `${this.nameScope.join('/')}/${base}` : base;
    let name = scoped;
    for (let i = 1; this.usedNames.has(name); i++) name = `${scoped}_${i}`;
    this.usedNames.add(name);
    return name;
  }

  /** Runs `build` with every new value and node name prefixed by `scope`. */
  scope<T>(scope: string, build: () => T): T {
    this.nameScope.push(scope);
    try {
      return build();
    } finally {
      this.nameScope.pop();
    }
  }

  private newValue(name: string, dtype: DType, shape: Shape, kind: ValueKind, exactName = false): Value {
    if (exactName) {
      if (this.usedNames.has(name)) throw new Error(`graph ${this.name}: duplicate value name ${name}`);
      this.usedNames.add(name);
    }
    return new Value(this, this.nextId++, exactName ? name : this.uniqueName(name), dtype, shape, kind);
  }

  /** A graph input fed at run time. The name is kept exactly (feeds use it). */
  input(name: string, dtype: DType, shape: Shape): Value {
    const value = this.newValue(name, dtype, shape, 'input', true);
    this.inputs.push(value);
    return value;
  }

  /** A weight stored with the model; `external` puts it in the external data file. */
  initializer(name: string, tensor: HostTensor, external = true): Value {
    const value = this.newValue(name, tensor.dtype, tensor.shape, 'initializer', true);
    if (external && this.weightSink) {
      const file = this.weightSink(value.name, tensor);
      const empty = { dtype: tensor.dtype, shape: tensor.shape, data: new Uint8Array(0) };
      this.initializers.push({ value, tensor: empty, external, file });
    } else this.initializers.push({ value, tensor, external });
    return value;
  }

  /** A small constant embedded in the protobuf. */
  constant(tensor: HostTensor, name = 'const'): Value {
    const value = this.newValue(name, tensor.dtype, tensor.shape, 'constant');
    this.constants.set(value, tensor);
    return value;
  }

  /** Marks a value as a graph output; `name` renames it through an Identity when given. */
  output(value: Value, name?: string): Value {
    let out = value;
    if (name !== undefined && name !== value.name) {
      out = this.node('Identity', [value], {}, [{ dtype: value.dtype, shape: value.shape }], name, true)[0];
    }
    if (this.outputs.includes(out)) throw new Error(`graph ${this.name}: ${out.name} is already an output`);
    this.outputs.push(out);
    return out;
  }

  /**
   * Appends a node. Op helpers compute `outputTypes` (shape inference) before calling this.
   * `outputName` names the first output exactly when `exactName` is set (graph outputs).
   */
  node(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, AttrValue>,
    outputTypes: readonly { dtype: DType; shape: Shape }[],
    outputName?: string,
    exactName = false,
    domain = '',
  ): Value[] {
    for (const input of inputs) {
      if (input && input.graph !== this) throw new Error(`${op}: input ${input.name} belongs to another graph`);
    }
    const base = outputName ?? op.toLowerCase();
    const outputs = outputTypes.map((t, i) =>
      this.newValue(i === 0 ? base : `${base}_${i}`, t.dtype, t.shape, 'node', exactName && i === 0),
    );
    const node: Node = { op, domain, inputs, outputs, attrs, name: this.uniqueName(`${op}`) };
    for (const out of outputs) out.producer = node;
    this.nodes.push(node);
    return outputs;
  }

  /**
   * Marks a node's value as a graph output under `name` by renaming the value itself, so no
   * Identity copies the tensor on every run; otherwise (an input, a value already an output, a
   * name taken) the same as output(value, name).
   */
  outputAs(value: Value, name: string): Value {
    if (value.kind !== 'node' || this.outputs.includes(value) || this.usedNames.has(name))
      return this.output(value, name);
    this.usedNames.delete(value.name);
    this.usedNames.add(name);
    value.name = name;
    this.outputs.push(value);
    return value;
  }

  /** Total bytes of initializer data (what the external data file will hold). */
  initializerBytes(): number {
    let bytes = 0;
    for (const entry of this.initializers) bytes += entry.tensor.data.byteLength;
    return bytes;
  }
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16';
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
