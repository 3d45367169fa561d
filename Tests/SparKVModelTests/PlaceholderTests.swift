import Testing
@testable import SparKVModel
