package message

import (
	"fmt"
)

func schemaVersion(f fields) (float64, error) {
	return f.number("", "schema_version", true)
}

func packageTarget(f fields, key string) (*PackageTarget, error) {
	s, err := f.sub("", key)
	if err != nil || s == nil {
		return nil, err
	}
	t := &PackageTarget{}
	if t.Arch, err = s.str(key, "arch", true); err != nil {
		return nil, err
	}
	if t.Dist, err = s.str(key, "dist", true); err != nil {
		return nil, err
	}
	return t, firstErr(validateNameField(key+".arch", t.Arch), validateNameField(key+".dist", t.Dist))
}

func imageTarget(f fields, key string) (*ImageTarget, error) {
	s, err := f.sub("", key)
	if err != nil || s == nil {
		return nil, err
	}
	t := &ImageTarget{}
	if t.Arch, err = s.str(key, "arch", true); err != nil {
		return nil, err
	}
	if t.Selection, err = s.str(key, "selection", true); err != nil {
		return nil, err
	}
	return t, firstErr(validateNameField(key+".arch", t.Arch), validateNameField(key+".selection", t.Selection))
}

func project(f fields) (string, error) {
	p, err := f.str("", "project", true)
	if err != nil {
		return "", err
	}
	if err := ValidateProject(p); err != nil {
		return "", &FieldError{"project", err.Error()}
	}
	return p, nil
}

// PeekRequestID returns the request_id of a document if one can be read,
// so that even a rejected message can be answered.
func PeekRequestID(data []byte) string {
	f, err := parseMap(data)
	if err != nil {
		return ""
	}
	id, err := f.str("", "request_id", true)
	if err != nil || len(id) > 128 {
		return ""
	}
	return id
}

func requestID(f fields) (string, error) {
	id, err := f.str("", "request_id", true)
	if err != nil {
		return "", err
	}
	if len(id) > 128 {
		return "", &FieldError{"request_id", "longer than 128 bytes"}
	}
	if err := ValidateName(id); err != nil {
		return "", &FieldError{"request_id", err.Error()}
	}
	return id, nil
}

// DecodeBuildRequest decodes and validates a build request.
func DecodeBuildRequest(data []byte) (*BuildRequest, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	r := &BuildRequest{}
	err = func() (err error) {
		if r.SchemaVersion, err = schemaVersion(f); err != nil {
			return err
		}
		if r.RequestID, err = requestID(f); err != nil {
			return err
		}
		if r.RunnerGroup, err = f.str("", "runner_group", true); err != nil {
			return err
		}
		if err = validateNameField("runner_group", r.RunnerGroup); err != nil {
			return err
		}
		if r.Action, err = f.str("", "action", true); err != nil {
			return err
		}
		if !requestActions[r.Action] {
			return &FieldError{"action", fmt.Sprintf("unknown action %q", r.Action)}
		}
		if r.Project, err = project(f); err != nil {
			return err
		}
		if r.Package, err = packageTarget(f, "package"); err != nil {
			return err
		}
		if r.Image, err = imageTarget(f, "image"); err != nil {
			return err
		}
		if r.FreshBuildRoot, err = f.boolean("", "fresh_build_root"); err != nil {
			return err
		}
		switch {
		case r.Package == nil && r.Image == nil:
			return &FieldError{"package", "required (or image)"}
		case r.Package != nil && r.Image != nil:
			return &FieldError{"image", "not allowed together with package"}
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	return r, nil
}

// DecodeInfoRequest decodes and validates an info request.
func DecodeInfoRequest(data []byte) (*InfoRequest, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, fmt.Errorf("info request: %w", err)
	}
	r := &InfoRequest{}
	err = func() (err error) {
		if r.SchemaVersion, err = schemaVersion(f); err != nil {
			return err
		}
		if r.RequestID, err = requestID(f); err != nil {
			return err
		}
		if r.Project, err = project(f); err != nil {
			return err
		}
		if r.Package, err = packageTarget(f, "package"); err != nil {
			return err
		}
		if r.Image, err = imageTarget(f, "image"); err != nil {
			return err
		}
		if r.Package == nil && r.Image == nil {
			return &FieldError{"package", "required (or image)"}
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("info request: %w", err)
	}
	return r, nil
}

// DecodeResponse decodes a response. Responses are read by clients and the
// collector, not acted on as commands, so project is not required to be a
// projects/ path (the original's image responses carry the bare name).
func DecodeResponse(data []byte) (*Response, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	r := &Response{}
	err = func() (err error) {
		if r.SchemaVersion, err = schemaVersion(f); err != nil {
			return err
		}
		if r.RequestID, err = f.str("", "request_id", false); err != nil {
			return err
		}
		if r.Identity, err = f.str("", "identity", true); err != nil {
			return err
		}
		if r.ResponseCode, err = f.str("", "response_code", true); err != nil {
			return err
		}
		if r.Message, err = f.str("", "message", false); err != nil {
			return err
		}
		if r.Project, err = f.str("", "project", false); err != nil {
			return err
		}
		if t, err := f.sub("", "target"); err != nil {
			return err
		} else if t != nil {
			r.Target = &Target{}
			if r.Target.Arch, err = t.str("target", "arch", true); err != nil {
				return err
			}
			if r.Target.Dist, err = t.str("target", "dist", false); err != nil {
				return err
			}
			if r.Target.Selection, err = t.str("target", "selection", false); err != nil {
				return err
			}
		}
		if p, err := f.sub("", "package_prepare"); err != nil {
			return err
		} else if p != nil {
			r.PackagePrepare = &PackagePrepare{}
			pp := r.PackagePrepare
			if pp.BuildRoot, err = p.str("package_prepare", "build_root", false); err != nil {
				return err
			}
			if pp.PrepareLogFile, err = p.str("package_prepare", "prepare_log_file", false); err != nil {
				return err
			}
			if pp.SolverFile, err = p.str("package_prepare", "solver_file", false); err != nil {
				return err
			}
			if pp.ExitCode, err = p.integer("package_prepare", "exit_code"); err != nil {
				return err
			}
		}
		if p, err := f.sub("", "package"); err != nil {
			return err
		} else if p != nil {
			r.Package = &PackageResult{}
			pr := r.Package
			if pr.BinaryPackages, err = p.strings("package", "binary_packages"); err != nil {
				return err
			}
			if pr.LogFile, err = p.str("package", "log_file", false); err != nil {
				return err
			}
			if pr.PrepareLogFile, err = p.str("package", "prepare_log_file", false); err != nil {
				return err
			}
			if pr.SolverFile, err = p.str("package", "solver_file", false); err != nil {
				return err
			}
			if pr.ExitCode, err = p.integer("package", "exit_code"); err != nil {
				return err
			}
		}
		if p, err := f.sub("", "image"); err != nil {
			return err
		} else if p != nil {
			r.Image = &ImageResult{}
			ir := r.Image
			if ir.BinaryPackages, err = p.strings("image", "binary_packages"); err != nil {
				return err
			}
			if ir.LogFile, err = p.str("image", "log_file", false); err != nil {
				return err
			}
			if ir.SolverFile, err = p.str("image", "solver_file", false); err != nil {
				return err
			}
			if ir.ExitCode, err = p.integer("image", "exit_code"); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	return r, nil
}

// DecodeInfoResponse decodes an info response.
func DecodeInfoResponse(data []byte) (*InfoResponse, error) {
	f, err := parseMap(data)
	if err != nil {
		return nil, fmt.Errorf("info response: %w", err)
	}
	r := &InfoResponse{}
	err = func() (err error) {
		if r.SchemaVersion, err = schemaVersion(f); err != nil {
			return err
		}
		if r.RequestID, err = f.str("", "request_id", true); err != nil {
			return err
		}
		if r.Identity, err = f.str("", "identity", true); err != nil {
			return err
		}
		if r.Project, err = f.str("", "project", true); err != nil {
			return err
		}
		if r.SourceIP, err = f.str("", "source_ip", false); err != nil {
			return err
		}
		if r.IsRunning, err = f.boolean("", "is_running"); err != nil {
			return err
		}
		if r.BinaryPackages, err = f.strings("", "binary_packages"); err != nil {
			return err
		}
		if r.LogFile, err = f.str("", "log_file", false); err != nil {
			return err
		}
		if r.SolverFile, err = f.str("", "solver_file", false); err != nil {
			return err
		}
		if r.UTCModificationTime, err = f.str("", "utc_modification_time", false); err != nil {
			return err
		}
		if r.BuildStatus, err = f.str("", "build_status", false); err != nil {
			return err
		}
		if p, err := f.sub("", "package"); err != nil {
			return err
		} else if p != nil {
			r.Package = &InfoPackage{}
			if r.Package.Arch, err = p.str("package", "arch", true); err != nil {
				return err
			}
			if r.Package.Dist, err = p.str("package", "dist", true); err != nil {
				return err
			}
			if r.Package.PrepareLogFile, err = p.str("package", "prepare_log_file", false); err != nil {
				return err
			}
		}
		if r.Image, err = imageTarget(f, "image"); err != nil {
			return err
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("info response: %w", err)
	}
	return r, nil
}
