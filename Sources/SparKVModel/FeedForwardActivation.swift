#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSparKVModel

extension ModelArchitecture.Activation {
    /// `gate[i] = act(gate[i]) * up[i]` for `i < count`: the gated feed-forward's middle.
    func gate(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        switch self {
        case .silu:
            svm_swiglu(gate, up, Int64(count), gate)
        case .geluTanh:
            // GELU's tanh approximation, as Gemma (and llama.cpp's ggml_gelu) computes it.
            let k: Float = 0.7978845608028654   // sqrt(2/pi)
            for i in 0..<count {
                let x = gate[i]
                gate[i] = 0.5 * x * (1 + tanhf(k * (x + 0.044715 * x * x * x))) * up[i]
            }
        }
    }
}
