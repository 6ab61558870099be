-- ONNX, the second model format (#18). What the registry read from a version's artifact (an ONNX graph's inputs,
-- outputs, element types, shapes, opset, producer) is kept with the version; null for formats it does not inspect.
-- A new nullable column does not touch stored rows (ALTER TABLE fires no row trigger: versions stay immutable).
ALTER TABLE model_versions ADD COLUMN artifact_signature JSONB;

-- ONNX graphs may be uploaded for manual registration (vetted like the ones trainers write).
ALTER TABLE artifacts DROP CONSTRAINT artifacts_format_check;
ALTER TABLE artifacts ADD CONSTRAINT artifacts_format_check CHECK (format IN ('json', 'npz', 'onnx'));
