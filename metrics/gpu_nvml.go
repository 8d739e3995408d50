//go:build cgo && linux

package metrics

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlSource reads GPUs through NVML, which go-nvml loads from the driver
// at run time: a machine without the driver gets an error, not a crash.
type nvmlSource struct {
	devs  []nvml.Device
	names []string
}

func openNVML() (gpuSource, error) {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML is not available: %s", nvml.ErrorString(ret))
	}
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS || n == 0 {
		_ = nvml.Shutdown()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML cannot count GPUs: %s", nvml.ErrorString(ret))
		}
		return nil, errors.New("no GPU found")
	}
	s := &nvmlSource{}
	for i := range n {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		uuid, ret := d.GetUUID()
		if ret != nvml.SUCCESS {
			continue
		}
		s.devs = append(s.devs, d)
		s.names = append(s.names, uuid)
	}
	if len(s.devs) == 0 {
		_ = nvml.Shutdown()
		return nil, errors.New("no GPU could be opened through NVML")
	}
	return s, nil
}

func (s *nvmlSource) uuids() []string { return s.names }

func (s *nvmlSource) read(i int) (gpuReading, error) {
	d := s.devs[i]
	var r gpuReading
	util, ret := d.GetUtilizationRates()
	if ret != nvml.SUCCESS {
		return r, fmt.Errorf("utilization: %s", nvml.ErrorString(ret))
	}
	r.utilization = float64(util.Gpu) / 100
	if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
		r.memTotal, r.memUsed = mem.Total, mem.Used
	}
	if mw, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
		r.power = float64(mw) / 1000
	}
	if mw, ret := d.GetPowerManagementLimit(); ret == nvml.SUCCESS {
		r.powerLimit = float64(mw) / 1000
	}
	if mj, ret := d.GetTotalEnergyConsumption(); ret == nvml.SUCCESS {
		r.energy = mj
	}
	return r, nil
}

func (s *nvmlSource) close() { _ = nvml.Shutdown() }
