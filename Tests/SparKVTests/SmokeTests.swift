import Testing
import CSparKV

@Test func versionIsReported() {
    #expect(sparkv_version() == UInt32(SPARKV_VERSION_NUMBER))
}
