-- RadCheck auto-routing for Orthanc (docs/pacs-results.md).
-- When a study has been quiet for StableAge seconds, push its chest radiograph series (CR/DX) to
-- RadCheck. Result objects RadCheck sends back (SR, PR) are never pushed again.
--   TARGET = 'stow'  : DICOMweb STOW-RS to the DicomWeb server named "radcheck"
--   TARGET = 'dimse' : C-STORE to the DicomModalities entry named "radcheck" (`radcheck dicom listen`)

TARGET = TARGET or 'stow'
local MODALITIES = { CR = true, DX = true }

function RadCheckSeries(studyId)
  local study = ParseJson(RestApiGet('/studies/' .. studyId))
  local series = {}
  for _, id in ipairs(study['Series']) do
    local s = ParseJson(RestApiGet('/series/' .. id))
    if MODALITIES[s['MainDicomTags']['Modality']] then
      table.insert(series, id)
    end
  end
  return series
end

function OnStableStudy(studyId, tags, metadata)
  local series = RadCheckSeries(studyId)
  if #series == 0 then
    return
  end
  local body = DumpJson({ Resources = series, Synchronous = true }, true)
  if TARGET == 'dimse' then
    RestApiPost('/modalities/radcheck/store', body)
  else
    RestApiPost('/dicom-web/servers/radcheck/stow', body)
  end
  print('RadCheck: pushed ' .. #series .. ' series of study ' .. studyId .. ' (' .. TARGET .. ')')
end
